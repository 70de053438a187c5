"""The LLM ToolActor: an OpenAI-compatible endpoint writes each observation, constrained to the tool's output schema.

The model gets the tool's description, the call's arguments and the pages a grounded search finds for
them, and answers with structured output under the tool's output schema, so its observation is valid by
construction; it is validated again (`LLMClient.chat_json`). A failed or invalid answer is retried
(tenacity), then the call falls back to the grounded actor; both are counted in `stats`. Exact
computations (compare, date_diff, calculator) always go to the grounded actor: a simulated sum can only
be wrong. Same `Actor` protocol as the grounded actor, so the call handler does not care which it has.

    LLMActor(LLMClient("http://127.0.0.1:8000", "model-name"), GroundedActor(corpus, tools=toolmaker), tools=toolmaker)
"""

from __future__ import annotations

import json
import logging
from collections import Counter

from tenacity import Retrying, retry_if_exception_type, stop_after_attempt

from simulator.grounded import BackendError, DocumentSet, GroundedActor
from simulator.library import COMPUTED_OPERATIONS, ToolResolver, ToolSpec
from simulator.llm_client import LLMClient, LLMError

log = logging.getLogger(__name__)

_SYSTEM = (
    "You are the tool `{name}`: {description}\n"
    "Reply with the tool's result as JSON only, using the facts in these encyclopedia pages "
    "(say so in an error if they do not contain it):\n{pages}"
)


class LLMActor:
    """Answers tool calls with an LLM; `stats` counts llm_ok, llm_failed_attempts, fallbacks and computed calls."""

    def __init__(
        self,
        client: LLMClient,
        fallback: GroundedActor,
        *,
        tools: ToolResolver | None = None,
        attempts: int = 2,
        max_context_chars: int = 1500,
        max_tokens: int | None = None,
    ) -> None:
        if attempts < 1:
            raise ValueError(f"attempts must be >= 1, got {attempts}")
        self.client = client
        self.fallback = fallback
        self.tools = tools if tools is not None else fallback.tools
        self.attempts = attempts
        self.max_context_chars = max_context_chars
        self.max_tokens = max_tokens
        self.stats: Counter = Counter()

    def run(self, tool: str, arguments: dict, documents: DocumentSet) -> dict:
        """The observation of one call whose name and arguments were already validated."""
        spec = self.tools.spec(tool)
        if spec is None:
            raise BackendError(f"the LLM actor does not know tool {tool!r}")
        if spec.operation in COMPUTED_OPERATIONS:
            self.stats["computed"] += 1
            return self.fallback.run(tool, arguments, documents)
        messages = self._messages(spec, arguments, documents)
        retrying = Retrying(
            stop=stop_after_attempt(self.attempts), retry=retry_if_exception_type(LLMError), reraise=True
        )
        try:
            observation = retrying(self._ask, spec, messages)
        except LLMError as error:
            self.stats["fallbacks"] += 1
            log.warning("LLM actor: %s failed %d time(s), answering from documents: %s", tool, self.attempts, error)
            return self.fallback.run(tool, arguments, documents)
        self.stats["llm_ok"] += 1
        return observation

    def _ask(self, spec: ToolSpec, messages: list[dict]) -> dict:
        try:
            return self.client.chat_json(messages, spec.output_schema, name=spec.name, max_tokens=self.max_tokens)
        except LLMError:
            self.stats["llm_failed_attempts"] += 1
            raise

    def _messages(self, spec: ToolSpec, arguments: dict, documents: DocumentSet) -> list[dict]:
        description = spec.tool["function"]["description"]
        system = _SYSTEM.format(name=spec.name, description=description, pages=self._pages(arguments, documents))
        return [{"role": "system", "content": system}, {"role": "user", "content": json.dumps(arguments)}]

    def _pages(self, arguments: dict, documents: DocumentSet) -> str:
        """The pages a grounded search for the arguments finds, cut to the context budget."""
        query = " ".join(str(value) for value in arguments.values() if isinstance(value, str))[:300]
        if not query.strip():
            return "(none)"
        try:
            results = self.fallback.run("search", {"query": query}, documents)["results"]
        except BackendError:
            return "(none)"
        text = "\n".join(f"{page['title']}: {page['text']}" for page in results)
        return text[: self.max_context_chars] or "(none)"
