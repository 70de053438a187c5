"""The ToolMaker: which OpenAI function tools a task gets, and what their observations must look like.

A task is classified (bridge, comparison, compositional, inference; and whether it asks about dates or
numbers); it gets the utility tools its class needs (`search`, `open_page`, `lookup`, plus `compare`,
`date_diff`, `calculator` when it compares or counts) and task-specific relation tools, designed from the
question by rules or by an LLM (`simulator.llm_toolmaker`), with the rules as fallback. Every tool passes
`validate_tool` and its output schema `check_schema` before it leaves; designed tools are repaired or
dropped, and each repair, drop and fallback is counted in `ToolMaker.stats`.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from jsonschema import Draft202012Validator
from jsonschema.exceptions import SchemaError

from mtr.task import Task
from mtr.toolschema import ToolSchemaError, argument_errors, instance_errors, validate_tool
from simulator.cache import LRUCache
from simulator.library import (
    CALCULATOR,
    COMPARE,
    DATE_DIFF,
    LIBRARY,
    LOOKUP,
    MINIMAL_LIBRARY,
    OPEN_PAGE,
    RELATION_OUTPUT_SCHEMA,
    SEARCH,
    Grounding,
    ToolSpec,
)
from simulator.repair import repair_tool
from simulator.taskspecific import find_relation, relation_tools, standard_spec

log = logging.getLogger(__name__)

TASK_KINDS = ("comparison", "bridge", "compositional", "inference")
# The fixed pair older callers pass as `library` (and import from here, with ToolSpec).
DEFAULT_LIBRARY = MINIMAL_LIBRARY


@dataclass(frozen=True)
class TaskProfile:
    """What the ToolMaker knows about a task before choosing tools."""

    kind: str
    numeric: bool  # asks for a date, a year, a count or an ordering of them
    arithmetic: bool = False  # needs a computation: a count, a difference, an age, a duration


@dataclass(frozen=True)
class ToolSet:
    """The tools of one task; `source` says who designed the task-specific ones ("rules", "llm", "fixed")."""

    tools: tuple[ToolSpec, ...]
    task_kind: str
    numeric: bool = False
    source: str = "fixed"


@dataclass(frozen=True)
class DesignedTool:
    """A tool proposed by a designer: the OpenAI tool as written and the relation it is meant to return."""

    tool: object
    relation: str


class ToolDesigner(Protocol):
    """Proposes task-specific tools (e.g. an LLM); may raise, the ToolMaker then falls back to its rules."""

    def design(self, task: Task, profile: TaskProfile) -> list[DesignedTool]: ...


@dataclass
class ToolMakerStats:
    """Counters an operator watches: how often designed tools needed repair, were dropped, or the designer failed."""

    made: Counter = field(default_factory=Counter)  # by source
    repaired: Counter = field(default_factory=Counter)  # by fix
    dropped: Counter = field(default_factory=Counter)  # by reason
    fallbacks: Counter = field(default_factory=Counter)  # by reason


class ToolMaker:
    """Hands out the tools of a task; every schema passed validation before it can leave.

    With `library` the ToolMaker is fixed: every task gets exactly those tools. Without it, tools are chosen
    per task, and `spec(name)` also knows every relation tool and every tool it designed (for calls).
    """

    def __init__(
        self,
        library: Sequence[ToolSpec] | None = None,
        *,
        designer: ToolDesigner | None = None,
        max_task_tools: int = 4,
        registry_size: int = 10_000,
    ) -> None:
        self._fixed = library is not None
        specs = list(library) if library is not None else list(LIBRARY.values())
        for spec in specs:
            check_spec(spec)
        self._specs = {spec.name: spec for spec in specs}
        if len(self._specs) != len(specs):
            raise ValueError(f"tool library has duplicate names: {[s.name for s in specs]}")
        self.designer = designer
        self.max_task_tools = max_task_tools
        self.stats = ToolMakerStats()
        # Designed tools are looked up again when the policy calls them; bounded because designs never repeat.
        # Locked because a server may design tools in worker threads while calls are being checked.
        self._designed: LRUCache[str, ToolSpec] = LRUCache(registry_size)
        self._lock = threading.Lock()

    @property
    def tool_names(self) -> tuple[str, ...]:
        return tuple(self._specs)

    def spec(self, name: str) -> ToolSpec | None:
        """The tool called `name`: a library tool, else (per-task mode) a designed or standard relation tool."""
        found = self._specs.get(name)
        if found is not None or self._fixed:
            return found
        with self._lock:
            designed = self._designed.get(name)
        return designed or standard_spec(name)

    def make_tools(self, task: Task) -> ToolSet:
        profile = profile_task(task)
        if self._fixed:
            return ToolSet(tuple(self._specs.values()), profile.kind, profile.numeric)
        specific, source = self._task_specific(task, profile)
        # By name, first wins: a designer may propose one tool twice, and library tools are never shadowed.
        by_name: dict[str, ToolSpec] = {}
        for spec in _utilities(profile) + specific:
            by_name.setdefault(spec.name, spec)
        tools = tuple(by_name.values())
        for spec in tools:
            validate_tool(spec.tool)
        self.stats.made[source] += 1
        return ToolSet(tools, profile.kind, profile.numeric, source)

    def _task_specific(self, task: Task, profile: TaskProfile) -> tuple[tuple[ToolSpec, ...], str]:
        rules = relation_tools(task.question, self.max_task_tools)
        if self.designer is None:
            return rules, "rules"
        try:
            designed = self.designer.design(task, profile)
        except Exception as error:  # any designer failure (endpoint down, bad JSON) means: use the rules
            return self._fall_back(task, f"designer failed: {type(error).__name__}", error, rules)
        admitted = [spec for spec in map(self._admit, designed[: self.max_task_tools]) if spec is not None]
        if not admitted:
            return self._fall_back(task, "no usable designed tool", None, rules)
        return tuple(admitted), "llm"

    def _fall_back(self, task: Task, reason: str, error: Exception | None, rules: tuple[ToolSpec, ...]):
        detail = f" ({error})" if error else ""
        log.warning("ToolMaker: task %s: %s%s; using the rule-made tools", task.id, reason, detail)
        self.stats.fallbacks[reason] += 1
        return rules, "rules_fallback"

    def _admit(self, designed: DesignedTool) -> ToolSpec | None:
        """Repair a designed tool and attach grounding and output schema; None (counted, logged) if unusable."""
        repair = repair_tool(designed.tool)
        for fix in repair.fixes:
            self.stats.repaired[_fix_kind(fix)] += 1
        reason = repair.dropped or _unusable(repair.tool)
        if reason:
            return self._drop(designed.tool, reason)
        tool = repair.tool
        subject = _subject_parameter(tool)
        known = find_relation(designed.relation) or find_relation(tool["function"]["name"])
        relation = known.key if known else designed.relation.strip() or tool["function"]["name"]
        spec = ToolSpec(tool, RELATION_OUTPUT_SCHEMA, Grounding("relation", relation=relation, subject=subject))
        try:
            check_spec(spec)
        except ValueError as error:
            return self._drop(designed.tool, str(error))
        return self._register(spec)

    def _drop(self, tool: object, reason: str) -> None:
        self.stats.dropped[_reason_kind(reason)] += 1
        log.warning("ToolMaker: dropped a designed tool (%s): %s", reason, json.dumps(tool, default=str)[:300])
        return None

    def _register(self, spec: ToolSpec) -> ToolSpec:
        """Remember a designed tool for its calls; a name already meaning something else gets a content suffix."""
        with self._lock:
            return self._register_locked(spec)

    def _register_locked(self, spec: ToolSpec) -> ToolSpec:
        name = spec.name
        existing = self._specs.get(name) or self._designed.get(name) or standard_spec(name)
        if existing is not None and existing != spec:
            digest = hashlib.sha1(json.dumps([spec.tool, spec.grounding.relation], sort_keys=True).encode()).hexdigest()
            name = f"{name[:57]}_{digest[:6]}"
            function = {**spec.tool["function"], "name": name}
            spec = ToolSpec({**spec.tool, "function": function}, spec.output_schema, spec.grounding)
            self.stats.repaired["rename"] += 1
        self._designed.put(name, spec)
        return spec


def check_spec(spec: ToolSpec) -> None:
    """Raise ToolSchemaError (a ValueError naming the tool) unless the tool and its output schema are valid."""
    validate_tool(spec.tool)
    try:
        Draft202012Validator.check_schema(spec.output_schema)
    except SchemaError as error:
        raise ToolSchemaError(f"tool {spec.name!r}: the output schema is invalid: {error.message}") from error
    # Compiling both schemas now keeps that cost (milliseconds) out of the first call's latency.
    argument_errors(spec.tool, {})
    instance_errors(spec.output_schema, {})


def _utilities(profile: TaskProfile) -> tuple[ToolSpec, ...]:
    tools = (SEARCH, OPEN_PAGE, LOOKUP)
    if profile.kind == "comparison" or profile.numeric:
        tools += (COMPARE,)
    if profile.arithmetic:
        tools += (DATE_DIFF, CALCULATOR)
    return tools


def _unusable(tool: dict) -> str:
    if tool["function"]["name"] in LIBRARY:
        return "name clashes with a library tool"
    if _subject_parameter(tool) == "":
        return "no string parameter to name the entity"
    return ""


def _subject_parameter(tool: dict) -> str:
    """The argument that names the entity: the first required string parameter, else the first string one."""
    parameters = tool["function"]["parameters"]
    properties = parameters.get("properties", {})
    strings = [name for name, schema in properties.items() if schema.get("type") == "string"]
    required = [name for name in parameters.get("required", []) if name in strings]
    return (required or strings or [""])[0]


def _fix_kind(fix: str) -> str:
    # Counter keys must stay few: "name: 'a b' -> 'a_b'" counts as "name".
    return fix.split(":", 1)[0]


def _reason_kind(reason: str) -> str:
    return re.sub(r"\s*\(.*", "", reason.split(":", 1)[-1] if reason.startswith("tool ") else reason)[:60].strip()


# -------------------------------------------------------------------------------------------- classifying

# Kinship and other implied relations: 2Wiki's "inference" questions ask for them.
_INFERENCE_WORDS = re.compile(
    r"\b(grand(father|mother|son|daughter|parent|child)|uncle|aunt|nephew|niece|cousin|in-law|sibling)\b", re.I
)
_COMPARISON_WORDS = re.compile(
    r"\b(which|who)\b.*\b(first|earlier|later|older|younger|more|less|larger|smaller|longer|shorter|higher"
    r"|lower|bigger|both|same)\b|\bboth\b|\bthe same\b",
    re.I,
)
_NESTED_POSSESSIVE = re.compile(r"\b(of|'s)\b.*\b(of|'s)\b", re.I)
_NUMERIC_WORDS = re.compile(
    r"\b(when|what year|which year|in what year|how (many|much|long|old)|older|younger|oldest|youngest|earlier"
    r"|later|first|last|born first|died first|date|age|years?|number of|before|after)\b",
    re.I,
)
_ARITHMETIC_WORDS = re.compile(
    r"\b(how (many|much|long|old)|difference|total|sum|combined|average|aged?|years (between|apart|after|before)"
    r"|number of)\b",
    re.I,
)


def classify_task(task: Task) -> str:
    """One of TASK_KINDS, from the dataset's own label when it has one, else roughly from the question."""
    label = task.question_type.strip().lower()
    # 2Wiki's "bridge_comparison" is a comparison that needs a bridge first; comparing is the harder part.
    for kind in TASK_KINDS:
        if kind in label:
            return kind
    question = task.question
    if _INFERENCE_WORDS.search(question):
        return "inference"
    if _COMPARISON_WORDS.search(question):
        return "comparison"
    if _NESTED_POSSESSIVE.search(question):
        return "compositional"
    return "bridge"


def is_numeric_question(question: str) -> bool:
    """Does the question ask for a date, a year, a count, or an ordering in time or size?"""
    return _NUMERIC_WORDS.search(question) is not None


def needs_arithmetic(question: str) -> bool:
    """Does answering need a computation (a count, a difference, an age, a time span)?"""
    return _ARITHMETIC_WORDS.search(question) is not None


def profile_task(task: Task) -> TaskProfile:
    question = task.question
    arithmetic = needs_arithmetic(question)
    return TaskProfile(classify_task(task), arithmetic or is_numeric_question(question), arithmetic)
