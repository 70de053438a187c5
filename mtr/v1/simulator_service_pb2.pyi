from mtr.v1 import task_pb2 as _task_pb2
from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class CallStatus(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    CALL_STATUS_UNSPECIFIED: _ClassVar[CallStatus]
    CALL_STATUS_OK: _ClassVar[CallStatus]
    CALL_STATUS_UNKNOWN_TOOL: _ClassVar[CallStatus]
    CALL_STATUS_INVALID_ARGUMENTS: _ClassVar[CallStatus]
    CALL_STATUS_INPUT_TOO_LARGE: _ClassVar[CallStatus]
    CALL_STATUS_BACKEND_ERROR: _ClassVar[CallStatus]
CALL_STATUS_UNSPECIFIED: CallStatus
CALL_STATUS_OK: CallStatus
CALL_STATUS_UNKNOWN_TOOL: CallStatus
CALL_STATUS_INVALID_ARGUMENTS: CallStatus
CALL_STATUS_INPUT_TOO_LARGE: CallStatus
CALL_STATUS_BACKEND_ERROR: CallStatus

class MakeToolsRequest(_message.Message):
    __slots__ = ("task",)
    TASK_FIELD_NUMBER: _ClassVar[int]
    task: _task_pb2.Task
    def __init__(self, task: _Optional[_Union[_task_pb2.Task, _Mapping]] = ...) -> None: ...

class MakeToolsResponse(_message.Message):
    __slots__ = ("tools_json", "task_kind")
    TOOLS_JSON_FIELD_NUMBER: _ClassVar[int]
    TASK_KIND_FIELD_NUMBER: _ClassVar[int]
    tools_json: _containers.RepeatedScalarFieldContainer[str]
    task_kind: str
    def __init__(self, tools_json: _Optional[_Iterable[str]] = ..., task_kind: _Optional[str] = ...) -> None: ...

class CallToolRequest(_message.Message):
    __slots__ = ("task_id", "tool_name", "arguments_json", "documents")
    TASK_ID_FIELD_NUMBER: _ClassVar[int]
    TOOL_NAME_FIELD_NUMBER: _ClassVar[int]
    ARGUMENTS_JSON_FIELD_NUMBER: _ClassVar[int]
    DOCUMENTS_FIELD_NUMBER: _ClassVar[int]
    task_id: str
    tool_name: str
    arguments_json: str
    documents: _containers.RepeatedCompositeFieldContainer[_task_pb2.Document]
    def __init__(self, task_id: _Optional[str] = ..., tool_name: _Optional[str] = ..., arguments_json: _Optional[str] = ..., documents: _Optional[_Iterable[_Union[_task_pb2.Document, _Mapping]]] = ...) -> None: ...

class CallToolResponse(_message.Message):
    __slots__ = ("observation_json", "status", "error", "cached", "replica")
    OBSERVATION_JSON_FIELD_NUMBER: _ClassVar[int]
    STATUS_FIELD_NUMBER: _ClassVar[int]
    ERROR_FIELD_NUMBER: _ClassVar[int]
    CACHED_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    observation_json: str
    status: CallStatus
    error: str
    cached: bool
    replica: str
    def __init__(self, observation_json: _Optional[str] = ..., status: _Optional[_Union[CallStatus, str]] = ..., error: _Optional[str] = ..., cached: _Optional[bool] = ..., replica: _Optional[str] = ...) -> None: ...

class CallToolsRequest(_message.Message):
    __slots__ = ("calls",)
    CALLS_FIELD_NUMBER: _ClassVar[int]
    calls: _containers.RepeatedCompositeFieldContainer[CallToolRequest]
    def __init__(self, calls: _Optional[_Iterable[_Union[CallToolRequest, _Mapping]]] = ...) -> None: ...

class CallToolsResponse(_message.Message):
    __slots__ = ("results",)
    RESULTS_FIELD_NUMBER: _ClassVar[int]
    results: _containers.RepeatedCompositeFieldContainer[CallToolResponse]
    def __init__(self, results: _Optional[_Iterable[_Union[CallToolResponse, _Mapping]]] = ...) -> None: ...

class SetNoiseRequest(_message.Message):
    __slots__ = ("share",)
    SHARE_FIELD_NUMBER: _ClassVar[int]
    share: float
    def __init__(self, share: _Optional[float] = ...) -> None: ...

class SetNoiseResponse(_message.Message):
    __slots__ = ("share", "replica")
    SHARE_FIELD_NUMBER: _ClassVar[int]
    REPLICA_FIELD_NUMBER: _ClassVar[int]
    share: float
    replica: str
    def __init__(self, share: _Optional[float] = ..., replica: _Optional[str] = ...) -> None: ...
