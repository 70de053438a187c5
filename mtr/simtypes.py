"""What the simulator client hands back and takes: tool results, call requests, tool sets, replica states, the
status names, and the error of a call that failed for good. Re-exported by `mtr.simclient`."""

from __future__ import annotations

from dataclasses import dataclass

from mtr.task import Document

# ToolResult.status values (mtr.v1.CallStatus without its prefix, lower case).
STATUS_OK = "ok"
STATUS_UNKNOWN_TOOL = "unknown_tool"
STATUS_INVALID_ARGUMENTS = "invalid_arguments"
STATUS_INPUT_TOO_LARGE = "input_too_large"
STATUS_BACKEND_ERROR = "backend_error"


class SimulatorError(RuntimeError):
    """A simulator RPC failed for good; the message names the replica(s), the method and the gRPC status."""


@dataclass(frozen=True)
class ToolResult:
    """The answer to one tool call; `observation` is always a JSON object (an error one when status != ok).

    `latency_s` is what the caller waited for this call: from sending it to holding its answer, retries included.
    """

    observation: dict
    status: str
    error: str
    cached: bool
    replica: str
    latency_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.status == STATUS_OK


@dataclass(frozen=True)
class ToolCallRequest:
    """One tool call as the policy wrote it; `documents` restricts retrieval to the task's own documents."""

    task_id: str
    name: str
    arguments_json: str
    documents: tuple[Document, ...] = ()


@dataclass(frozen=True)
class ToolSet:
    tools: tuple[dict, ...]
    task_kind: str


@dataclass(frozen=True)
class ReplicaState:
    """What the client currently believes about one replica (for logs, metrics and tests)."""

    address: str
    up: bool
    inflight: int
    reason: str
