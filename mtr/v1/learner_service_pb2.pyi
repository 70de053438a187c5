from google.protobuf.internal import containers as _containers
from google.protobuf.internal import enum_type_wrapper as _enum_type_wrapper
from google.protobuf import descriptor as _descriptor
from google.protobuf import message as _message
from collections.abc import Iterable as _Iterable, Mapping as _Mapping
from typing import ClassVar as _ClassVar, Optional as _Optional, Union as _Union

DESCRIPTOR: _descriptor.FileDescriptor

class LossAggregation(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    LOSS_AGGREGATION_UNSPECIFIED: _ClassVar[LossAggregation]
    LOSS_AGGREGATION_TOKEN_MEAN: _ClassVar[LossAggregation]
    LOSS_AGGREGATION_SEQ_MEAN_TOKEN_MEAN: _ClassVar[LossAggregation]
    LOSS_AGGREGATION_SEQ_MEAN_TOKEN_SUM: _ClassVar[LossAggregation]

class Objective(int, metaclass=_enum_type_wrapper.EnumTypeWrapper):
    __slots__ = ()
    OBJECTIVE_UNSPECIFIED: _ClassVar[Objective]
    OBJECTIVE_SFT: _ClassVar[Objective]
    OBJECTIVE_GRPO: _ClassVar[Objective]
LOSS_AGGREGATION_UNSPECIFIED: LossAggregation
LOSS_AGGREGATION_TOKEN_MEAN: LossAggregation
LOSS_AGGREGATION_SEQ_MEAN_TOKEN_MEAN: LossAggregation
LOSS_AGGREGATION_SEQ_MEAN_TOKEN_SUM: LossAggregation
OBJECTIVE_UNSPECIFIED: Objective
OBJECTIVE_SFT: Objective
OBJECTIVE_GRPO: Objective

class TrainSequence(_message.Message):
    __slots__ = ("token_ids", "loss_mask", "old_logprobs", "advantage")
    TOKEN_IDS_FIELD_NUMBER: _ClassVar[int]
    LOSS_MASK_FIELD_NUMBER: _ClassVar[int]
    OLD_LOGPROBS_FIELD_NUMBER: _ClassVar[int]
    ADVANTAGE_FIELD_NUMBER: _ClassVar[int]
    token_ids: _containers.RepeatedScalarFieldContainer[int]
    loss_mask: _containers.RepeatedScalarFieldContainer[int]
    old_logprobs: _containers.RepeatedScalarFieldContainer[float]
    advantage: float
    def __init__(self, token_ids: _Optional[_Iterable[int]] = ..., loss_mask: _Optional[_Iterable[int]] = ..., old_logprobs: _Optional[_Iterable[float]] = ..., advantage: _Optional[float] = ...) -> None: ...

class TrainStepRequest(_message.Message):
    __slots__ = ("objective", "sequences", "publish_weights", "learning_rate", "kl_coef", "clip_ratio_low", "clip_ratio_high", "loss_aggregation", "reset_optimizer")
    OBJECTIVE_FIELD_NUMBER: _ClassVar[int]
    SEQUENCES_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_WEIGHTS_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    KL_COEF_FIELD_NUMBER: _ClassVar[int]
    CLIP_RATIO_LOW_FIELD_NUMBER: _ClassVar[int]
    CLIP_RATIO_HIGH_FIELD_NUMBER: _ClassVar[int]
    LOSS_AGGREGATION_FIELD_NUMBER: _ClassVar[int]
    RESET_OPTIMIZER_FIELD_NUMBER: _ClassVar[int]
    objective: Objective
    sequences: _containers.RepeatedCompositeFieldContainer[TrainSequence]
    publish_weights: bool
    learning_rate: float
    kl_coef: float
    clip_ratio_low: float
    clip_ratio_high: float
    loss_aggregation: LossAggregation
    reset_optimizer: bool
    def __init__(self, objective: _Optional[_Union[Objective, str]] = ..., sequences: _Optional[_Iterable[_Union[TrainSequence, _Mapping]]] = ..., publish_weights: _Optional[bool] = ..., learning_rate: _Optional[float] = ..., kl_coef: _Optional[float] = ..., clip_ratio_low: _Optional[float] = ..., clip_ratio_high: _Optional[float] = ..., loss_aggregation: _Optional[_Union[LossAggregation, str]] = ..., reset_optimizer: _Optional[bool] = ...) -> None: ...

class TrainStepResponse(_message.Message):
    __slots__ = ("version", "loss", "grad_norm", "seconds", "tokens", "clip_fraction", "learning_rate", "publish_seconds", "publish_bytes", "kl", "weights_changed", "weights_total")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    LOSS_FIELD_NUMBER: _ClassVar[int]
    GRAD_NORM_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    TOKENS_FIELD_NUMBER: _ClassVar[int]
    CLIP_FRACTION_FIELD_NUMBER: _ClassVar[int]
    LEARNING_RATE_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_SECONDS_FIELD_NUMBER: _ClassVar[int]
    PUBLISH_BYTES_FIELD_NUMBER: _ClassVar[int]
    KL_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_CHANGED_FIELD_NUMBER: _ClassVar[int]
    WEIGHTS_TOTAL_FIELD_NUMBER: _ClassVar[int]
    version: int
    loss: float
    grad_norm: float
    seconds: float
    tokens: int
    clip_fraction: float
    learning_rate: float
    publish_seconds: float
    publish_bytes: int
    kl: float
    weights_changed: int
    weights_total: int
    def __init__(self, version: _Optional[int] = ..., loss: _Optional[float] = ..., grad_norm: _Optional[float] = ..., seconds: _Optional[float] = ..., tokens: _Optional[int] = ..., clip_fraction: _Optional[float] = ..., learning_rate: _Optional[float] = ..., publish_seconds: _Optional[float] = ..., publish_bytes: _Optional[int] = ..., kl: _Optional[float] = ..., weights_changed: _Optional[int] = ..., weights_total: _Optional[int] = ...) -> None: ...

class GetLearnerStatusRequest(_message.Message):
    __slots__ = ("compute_checksum",)
    COMPUTE_CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    compute_checksum: bool
    def __init__(self, compute_checksum: _Optional[bool] = ...) -> None: ...

class GetLearnerStatusResponse(_message.Message):
    __slots__ = ("version", "steps", "checksum", "world_size")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    STEPS_FIELD_NUMBER: _ClassVar[int]
    CHECKSUM_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    version: int
    steps: int
    checksum: str
    world_size: int
    def __init__(self, version: _Optional[int] = ..., steps: _Optional[int] = ..., checksum: _Optional[str] = ..., world_size: _Optional[int] = ...) -> None: ...

class SaveCheckpointRequest(_message.Message):
    __slots__ = ("path", "training_state")
    PATH_FIELD_NUMBER: _ClassVar[int]
    TRAINING_STATE_FIELD_NUMBER: _ClassVar[int]
    path: str
    training_state: bool
    def __init__(self, path: _Optional[str] = ..., training_state: _Optional[bool] = ...) -> None: ...

class RestoreCheckpointRequest(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class RestoreCheckpointResponse(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class SaveCheckpointResponse(_message.Message):
    __slots__ = ("path",)
    PATH_FIELD_NUMBER: _ClassVar[int]
    path: str
    def __init__(self, path: _Optional[str] = ...) -> None: ...

class OpenWeightGroupRequest(_message.Message):
    __slots__ = ("receivers",)
    RECEIVERS_FIELD_NUMBER: _ClassVar[int]
    receivers: int
    def __init__(self, receivers: _Optional[int] = ...) -> None: ...

class OpenWeightGroupResponse(_message.Message):
    __slots__ = ("address", "backend", "world_size", "timeout_s")
    ADDRESS_FIELD_NUMBER: _ClassVar[int]
    BACKEND_FIELD_NUMBER: _ClassVar[int]
    WORLD_SIZE_FIELD_NUMBER: _ClassVar[int]
    TIMEOUT_S_FIELD_NUMBER: _ClassVar[int]
    address: str
    backend: str
    world_size: int
    timeout_s: float
    def __init__(self, address: _Optional[str] = ..., backend: _Optional[str] = ..., world_size: _Optional[int] = ..., timeout_s: _Optional[float] = ...) -> None: ...

class SendWeightsRequest(_message.Message):
    __slots__ = ("version",)
    VERSION_FIELD_NUMBER: _ClassVar[int]
    version: int
    def __init__(self, version: _Optional[int] = ...) -> None: ...

class SendWeightsResponse(_message.Message):
    __slots__ = ("version", "seconds", "bytes", "buckets")
    VERSION_FIELD_NUMBER: _ClassVar[int]
    SECONDS_FIELD_NUMBER: _ClassVar[int]
    BYTES_FIELD_NUMBER: _ClassVar[int]
    BUCKETS_FIELD_NUMBER: _ClassVar[int]
    version: int
    seconds: float
    bytes: int
    buckets: int
    def __init__(self, version: _Optional[int] = ..., seconds: _Optional[float] = ..., bytes: _Optional[int] = ..., buckets: _Optional[int] = ...) -> None: ...
