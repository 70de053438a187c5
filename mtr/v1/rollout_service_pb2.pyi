from mtr.v1 import task_pb2 as _task_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class SamplingConfig(_message.Message):
    __slots__ = ("temperature", "top_p", "max_tokens_per_turn", "max_turns", "seed")
    TEMPERATURE_FIELD_NUMBER: _ClassVar[int]
    TOP_P_FIELD_NUMBER: _ClassVar[int]
    MAX_TOKENS_PER_TURN_FIELD_NUMBER: _ClassVar[int]
    MAX_TURNS_FIELD_NUMBER: _ClassVar[int]
    SEED_FIELD_NUMBER: _ClassVar[int]
    temperature: float
    top_p: float
    max_tokens_per_turn: int
    max_turns: int
    seed: int
    def __init__(self, temperature: _Optional[float] = ..., top_p: _Optional[float] = ..., max_tokens_per_turn: _Optional[int] = ..., max_turns: _Optional[int] = ..., seed: _Optional[int] = ...) -> None: ...

class GenerateGroupsRequest(_message.Message):
    __slots__ = ("tasks", "group_size", "sampling")
    TASKS_FIELD_NUMBER: _ClassVar[int]
    GROUP_SIZE_FIELD_NUMBER: _ClassVar[int]
    SAMPLING_FIELD_NUMBER: _ClassVar[int]
    tasks: _containers.RepeatedCompositeFieldContainer[_task_pb2.Task]
    group_size: int
    sampling: SamplingConfig
    def __init__(self, tasks: _Optional[_Iterable[_Union[_task_pb2.Task, _Mapping]]] = ..., group_size: _Optional[int] = ..., sampling: _Optional[_Union[SamplingConfig, _Mapping]] = ...) -> None: ...

class ToolCallRecord(_message.Message):
    __slots__ = ("name", "arguments_json", "observation_json", "status")
    NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    OBSERVATION_JSON_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    name: str
    arguments_json: str
    observation_json: str
    status: str
    def __init__(self, name: _Optional[str] = ..., arguments_json: _Optional[str] = ..., observation_json: _Optional[str] = ..., status: _Optional[str] = ...) -> None: ...

class Trace(_message.Message):
    __slots__ = ("task_id", "sample_index", "token_ids", "logprobs", "loss_mask", "prompt_tokens", "text", "policy_version", "turns", "tool_calls", "finish_reason")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    SAMPLE_INDEX_FIELD_NUMBER: _ClassVar[int]
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    LOSS_MASK_FIELD_NUMBER: _ClassVar[int]
    PROMPT_TOKENS_FIELD_NUMBER: _ClassVar[int]
    TEXT_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    TURNS_FIELD_NUMBER: _ClassVar[int]
    TOOL_CALLS_FIELD_NUMBER: _ClassVar[int]
    FINISH_REASON_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    sample_index: int
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    logprobs: _containers.RepeatedScalarFieldContainer[float]
    loss_mask: _containers.RepeatedScalarFieldContainer[int]
    prompt_tokens: int
    text: str
    policy_version: int
    turns: int
    tool_calls: _containers.RepeatedCompositeFieldContainer[ToolCallRecord]
    finish_reason: str
    def __init__(self, task_id: _Optional[str] = ..., sample_index: _Optional[int] = ..., token_ids: _Optional[_Iterable[int]] = ..., logprobs: _Optional[_Iterable[float]] = ..., loss_mask: _Optional[_Iterable[int]] = ..., prompt_tokens: _Optional[int] = ..., text: _Optional[str] = ..., policy_version: _Optional[int] = ..., turns: _Optional[int] = ..., tool_calls: _Optional[_Iterable[_Union[ToolCallRecord, _Mapping]]] = ..., finish_reason: _Optional[str] = ...) -> None: ...

class Group(_message.Message):
    __slots__ = ("task_id", "traces")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TRACES_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    traces: _containers.RepeatedCompositeFieldContainer[Trace]
    def __init__(self, task_id: _Optional[str] = ..., traces: _Optional[_Iterable[_Union[Trace, _Mapping]]] = ...) -> None: ...

class GenerateGroupsResponse(_message.Message):
    __slots__ = ("groups", "policy_version", "generated_tokens", "seconds")
    GROUPS_FIELD_NUMBER: _ClassVar[int]
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    GENERATED_TOKENS_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    groups: _containers.RepeatedCompositeFieldContainer[Group]
    policy_version: int
    generated_tokens: int
    seconds: float
    def __init__(self, groups: _Optional[_Iterable[_Union[Group, _Mapping]]] = ..., policy_version: _Optional[int] = ..., generated_tokens: _Optional[int] = ..., seconds: _Optional[float] = ...) -> None: ...

class LoadWeightsRequest(_message.Message):
    __slots__ = ("version", "compute_checksum")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    COMPUTE_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    version: int
    compute_checksum: bool
    def __init__(self, version: _Optional[int] = ..., compute_checksum: _Optional[bool] = ...) -> None: ...

class LoadWeightsResponse(_message.Message):
    __slots__ = ("version", "seconds", "bytes", "checksum")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    version: int
    seconds: float
    bytes: int
    checksum: str
    def __init__(self, version: _Optional[int] = ..., seconds: _Optional[float] = ..., bytes: _Optional[int] = ..., checksum: _Optional[str] = ...) -> None: ...

class GetRolloutStatusRequest(_message.Message):
    __slots__ = ("compute_checksum",)
    COMPUTE_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    compute_checksum: bool
    def __init__(self, compute_checksum: _Optional[bool] = ...) -> None: ...

class GetRolloutStatusResponse(_message.Message):
    __slots__ = ("policy_version", "checksum", "model")
    POLICY_VERSION_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    MODEL_FIELD_NUMBER: _ClassVar[int]
    policy_version: int
    checksum: str
    model: str
    def __init__(self, policy_version: _Optional[int] = ..., checksum: _Optional[str] = ..., model: _Optional[str] = ...) -> None: ...

class JoinWeightGroupRequest(_message.Message):
    __slots__ = ("address", "rank", "world_size", "backend", "timeout_s")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    RANK_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    address: str
    rank: int
    world_size: int
    backend: str
    timeout_s: float
    def __init__(self, address: _Optional[str] = ..., rank: _Optional[int] = ..., world_size: _Optional[int] = ..., backend: _Optional[str] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class JoinWeightGroupResponse(_message.Message):
    __slots__ = ("ranks",)
    RANKS_FIELD_NUMBER: _ClassVar[int]
    ranks: int
    def __init__(self, ranks: _Optional[int] = ...) -> None: ...
