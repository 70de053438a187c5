"""One tool call from raw policy text to a checked observation, independent of the transport.

Order of checks: known tool, size; the call cache under the text as written (policies mostly write the
canonical form, and then a hit needs no JSON work at all); JSON; the call cache under the canonical form (an
entry exists only for arguments that once passed the schema, so a hit skips validation: repeats within a GRPO
group are the common case and must be cheap), the argument schema, the actor, and the tool's output schema.
Every failure becomes a readable `{"error": ...}` observation with its status, because these are the policy's
mistakes and the policy must be able to read and recover from them.
"""

from __future__ import annotations

import enum
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from jsonschema import Draft202012Validator

from mtr.toolschema import argument_errors, instance_errors
from simulator.cache import CallKey, LRUCache, call_key
from simulator.grounded import CORPUS, DocumentSet
from simulator.library import ToolSpec
from simulator.metrics import SimulatorMetrics
from simulator.toolmaker import ToolMaker

log = logging.getLogger(__name__)

_MAX_NAME_IN_MESSAGE = 80


class CallStatus(enum.Enum):
    """Mirrors mtr.v1.CallStatus; the value is the lower-case name used in metrics and by clients."""

    OK = "ok"
    UNKNOWN_TOOL = "unknown_tool"
    INVALID_ARGUMENTS = "invalid_arguments"
    INPUT_TOO_LARGE = "input_too_large"
    BACKEND_ERROR = "backend_error"


@dataclass(frozen=True)
class CallOutcome:
    observation_json: str
    status: CallStatus
    error: str = ""
    cached: bool = False


class Actor(Protocol):
    def run(self, tool: str, arguments: dict, documents: DocumentSet) -> dict: ...


def _error(status: CallStatus, message: str) -> CallOutcome:
    return CallOutcome(json.dumps({"error": message}, ensure_ascii=False), status, message)


def _short(name: str) -> str:
    return name if len(name) <= _MAX_NAME_IN_MESSAGE else name[:_MAX_NAME_IN_MESSAGE] + "..."


class ToolCallHandler:
    """Validates, caches and executes tool calls against one actor and the ToolMaker's tool library."""

    def __init__(
        self,
        actor: Actor,
        toolmaker: ToolMaker,
        *,
        max_argument_chars: int = 2000,
        cache_size: int = 100_000,
        metrics: SimulatorMetrics | None = None,
    ) -> None:
        self.actor = actor
        self.toolmaker = toolmaker
        self.max_argument_chars = max_argument_chars
        self.cache: LRUCache[CallKey, str] = LRUCache(cache_size)
        self.metrics = metrics if metrics is not None else SimulatorMetrics()
        self._validators = _CompiledSchemas()

    def call(self, tool: str, arguments_json: str, documents: DocumentSet = CORPUS) -> CallOutcome:
        """Answer one call; never raises for anything the policy wrote."""
        self.metrics.inflight.inc()
        try:
            return self._answer(tool, arguments_json, documents)
        finally:
            self.metrics.inflight.dec()

    def call_batch(self, calls: Sequence[tuple[str, str, DocumentSet]]) -> list[CallOutcome]:
        """Answer (tool, arguments_json, documents) calls in order, each exactly as `call` would (a CallTools batch).

        The in-flight gauge moves once per batch rather than once per call: its lock is a visible part of a
        cached call's cost, and every call of the batch is in flight until the batch is answered.
        """
        self.metrics.inflight.inc(len(calls))
        try:
            return [self._answer(tool, arguments_json, documents) for tool, arguments_json, documents in calls]
        finally:
            self.metrics.inflight.dec(len(calls))

    def _answer(self, tool: str, arguments_json: str, documents: DocumentSet) -> CallOutcome:
        start = time.perf_counter()
        spec = self.toolmaker.spec(tool)
        outcome = self._call(tool, spec, arguments_json, documents)
        label = tool if spec is not None else "unknown"
        self.metrics.observe_call(label, outcome.status.value, time.perf_counter() - start)
        return outcome

    def _call(self, tool: str, spec: ToolSpec | None, arguments_json: str, documents: DocumentSet) -> CallOutcome:
        if spec is None:
            known = ", ".join(self.toolmaker.tool_names)
            return _error(CallStatus.UNKNOWN_TOOL, f"unknown tool {_short(tool)!r}; available tools: {known}")
        if len(arguments_json) > self.max_argument_chars:
            return _error(
                CallStatus.INPUT_TOO_LARGE,
                f"{tool}: arguments are {len(arguments_json)} characters, the limit is {self.max_argument_chars}",
            )
        # Only canonical keys are stored, so text equal to one is that same call, and valid JSON. An actor whose
        # answer also depends on something else (the model actor's quality) keys by it too, so no shortcut.
        variant = getattr(self.actor, "cache_variant", None)
        written = (tool, arguments_json, documents.key)
        cached = self.cache.get(written) if variant is None else None
        if cached is None:
            try:
                arguments = json.loads(arguments_json)
                scope = documents.key if variant is None else f"{documents.key}|{variant(tool, arguments)}"
                key = call_key(tool, arguments, scope)
            except (json.JSONDecodeError, RecursionError) as exc:
                return _error(CallStatus.INVALID_ARGUMENTS, f"{tool}: arguments are not valid JSON ({exc})")
            cached = self.cache.get(key) if key != written else None
        if cached is not None:
            self.metrics.cache_hits.inc()
            return CallOutcome(cached, CallStatus.OK, cached=True)
        parameters = spec.tool["function"]["parameters"]
        if not (isinstance(arguments, dict) and self._validators.is_valid(parameters, arguments)):
            errors = argument_errors(spec.tool, arguments)
            return _error(CallStatus.INVALID_ARGUMENTS, f"{tool}: invalid arguments: {'; '.join(errors)}")
        self.metrics.cache_misses.inc()
        return self._execute(tool, spec, arguments, documents, key)

    def _execute(self, tool: str, spec: ToolSpec, arguments: dict, documents: DocumentSet, key: CallKey) -> CallOutcome:
        try:
            observation = self.actor.run(tool, arguments, documents)
        except Exception as exc:  # the policy gets a readable error; the operator gets the traceback
            log.exception("tool %s failed on arguments %s", tool, key[1][:200])
            return _error(CallStatus.BACKEND_ERROR, f"{tool}: the simulator failed: {exc}")
        output_schema = spec.output_schema
        if not self._validators.is_valid(output_schema, observation):
            errors = instance_errors(output_schema, observation)
            log.error("tool %s produced an observation that breaks its output schema: %s", tool, errors)
            return _error(CallStatus.BACKEND_ERROR, f"{tool}: the simulator produced an invalid observation")
        observation_json = json.dumps(observation, ensure_ascii=False)
        self.cache.put(key, observation_json)
        return CallOutcome(observation_json, CallStatus.OK)


class _CompiledSchemas:
    """Validators compiled once per schema object, so the per-call check is only the validation itself.

    Keyed by identity (cheap) and holding the schema, so an id is never reused while its entry lives. Only
    the yes/no answer comes from here; readable messages still come from mtr.toolschema, so that "valid" and
    its wording stay the same everywhere. Schemas reaching this point were checked by the ToolMaker.
    """

    _MAX_ENTRIES = 1024

    def __init__(self) -> None:
        self._entries: dict[int, tuple[dict, Draft202012Validator]] = {}

    def is_valid(self, schema: dict, instance: object) -> bool:
        entry = self._entries.get(id(schema))
        if entry is None or entry[0] is not schema:
            if len(self._entries) >= self._MAX_ENTRIES:
                self._entries.clear()
            entry = (schema, Draft202012Validator(schema))
            self._entries[id(schema)] = entry
        return entry[1].is_valid(instance)
