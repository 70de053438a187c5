"""The AutoAgent's LLM teacher: any model behind an OpenAI-compatible chat endpoint writes the traces.

The teacher sees the same system prompt and tool list the policy will see and writes one turn at a
time in the trace grammar; its tool calls go to the real simulator farm and the observations come back
as `<tool_response>` user messages (plain chat, so it works with any chat template and needs no
server-side tool-call parser). Each question gets up to `attempts` samples; the first one that passes
the AutoAgent's acceptance checks is kept. Transient endpoint errors are retried; an endpoint that
stays down stops synthesis with `TeacherError` (what was written so far stays, and a re-run resumes).
"""

from __future__ import annotations

import json
import os

from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from controller.stages.autoagent import Rejected, check_trace
from mtr.config import SynthConfig
from mtr.grammar import (
    DEFAULT_SYSTEM_PROMPT,
    AssistantTurn,
    ToolTurn,
    Trace,
    TraceFormatError,
    parse_assistant_turn,
)
from mtr.simclient import SimulatorClient, ToolCallRequest
from mtr.task import Task

_STOPS = ("</tool_call>", "</answer>")


class TeacherError(RuntimeError):
    """The teacher endpoint cannot be used (unreachable, refuses the model, keeps failing)."""


def _transient(error: BaseException) -> bool:
    import openai

    return isinstance(error, (openai.APIConnectionError, openai.APITimeoutError, openai.InternalServerError))


class LLMTeacher:
    name = "llm"

    def __init__(self, config: SynthConfig, seed: int = 0, timeout_s: float = 120.0) -> None:
        import openai

        if not (config.llm_url and config.llm_model):
            raise ValueError("the LLM teacher needs synth.llm_url and synth.llm_model")
        base = config.llm_url.rstrip("/")
        self.base_url = base if base.endswith("/v1") else base + "/v1"
        self.config = config
        self.seed = seed
        key = os.environ.get(config.llm_api_key_env) or "EMPTY"
        self._client = openai.OpenAI(base_url=self.base_url, api_key=key, timeout=timeout_s, max_retries=0)

    def trace(self, task: Task, simulator: SimulatorClient) -> Trace:
        """The first accepted sample of up to `attempts`; otherwise Rejected with the last sample's reason."""
        reason = "no_attempt"
        for attempt in range(self.config.attempts):
            try:
                return self._sample(task, simulator, attempt)
            except Rejected as rejection:
                reason = rejection.reason
        raise Rejected(reason)

    def _sample(self, task: Task, simulator: SimulatorClient, attempt: int) -> Trace:
        system = f"{DEFAULT_SYSTEM_PROMPT}\n<tools>\n{json.dumps(list(task.tools), ensure_ascii=False)}\n</tools>"
        messages = [{"role": "system", "content": system}, {"role": "user", "content": task.question}]
        turns: list[AssistantTurn | ToolTurn] = []
        for _ in range(self.config.max_turns):
            text = self._complete(messages, seed=self.seed * 1000 + attempt)
            try:
                turn = parse_assistant_turn(text, task.tools)
            except TraceFormatError as error:
                raise Rejected(f"format_{error.reason.value}") from None
            turns.append(turn)
            messages.append({"role": "assistant", "content": text})
            if turn.answer is not None:
                trace = Trace(question=task.question, tools=tuple(task.tools), turns=tuple(turns))
                check_trace(trace, task)
                return trace
            call = turn.tool_call
            request = ToolCallRequest(
                task.id, call.name, json.dumps(call.arguments, ensure_ascii=False), task.documents
            )
            result = simulator.call_many([request])[0]
            if result.status != "ok":
                raise Rejected(f"tool_{result.status}")
            turns.append(ToolTurn(result.observation))
            observation = json.dumps(result.observation, ensure_ascii=False)
            messages.append({"role": "user", "content": f"<tool_response>{observation}</tool_response>"})
        raise Rejected("over_turn_budget")

    def _complete(self, messages: list[dict], seed: int) -> str:
        import openai

        try:
            response = self._request(messages, seed)
        except openai.OpenAIError as error:
            where = f"teacher endpoint {self.base_url} (model {self.config.llm_model!r})"
            raise TeacherError(f"{where}: {type(error).__name__}: {error}") from error
        choice = response.choices[0]
        text = choice.message.content or ""
        if choice.finish_reason == "stop":
            text = _restore_stop(text)
        return text

    @retry(
        retry=retry_if_exception(_transient),
        stop=stop_after_attempt(3),
        wait=wait_exponential(multiplier=0.5, max=8),
        reraise=True,
    )
    def _request(self, messages: list[dict], seed: int):
        return self._client.chat.completions.create(
            model=self.config.llm_model,
            messages=messages,
            max_tokens=self.config.max_tokens_per_turn,
            temperature=self.config.temperature,
            stop=list(_STOPS),
            seed=seed,
        )


def _restore_stop(text: str) -> str:
    """OpenAI-style servers drop the stop string; put back the closing tag the turn stopped on."""
    for tag in ("tool_call", "answer"):
        if f"<{tag}>" in text and f"</{tag}>" not in text:
            return f"{text}</{tag}>"
    return text


def make_teacher(config: SynthConfig, seed: int = 0):
    from controller.stages.autoagent import OracleTeacher

    return LLMTeacher(config, seed) if config.teacher == "llm" else OracleTeacher()
