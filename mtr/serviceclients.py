"""Thin typed clients of the rollout and learner services; the controller reaches them only through these.

Light on purpose (grpc + generated stubs). Each call has a deadline, and a failure is re-raised with the
service address and method so "which process died" is never a guess.
"""

from __future__ import annotations

from collections.abc import Sequence

import grpc

from mtr.grpcutil import CHANNEL_OPTIONS
from mtr.task import Task, to_proto
from mtr.v1 import learner_service_pb2 as lpb
from mtr.v1 import learner_service_pb2_grpc as lpb_grpc
from mtr.v1 import rollout_service_pb2 as rpb
from mtr.v1 import rollout_service_pb2_grpc as rpb_grpc


class ServiceError(RuntimeError):
    """A service call failed; the message names the service address, the method and the gRPC status.

    `code` keeps the status so a caller can tell a process that is gone (UNAVAILABLE: retry elsewhere) from a
    request that is wrong (INVALID_ARGUMENT: would fail anywhere)."""

    def __init__(self, message: str, code: grpc.StatusCode | None = None) -> None:
        super().__init__(message)
        self.code = code


class _Client:
    """`timeout_s` bounds a call once sent (a learner step, a rollout batch: long); `connect_timeout_s` bounds
    the wait for a connection before it is sent. A service whose process died is reported after the second,
    not an hour later, and the call is never sent twice (a step is not idempotent)."""

    def __init__(self, address: str, timeout_s: float, connect_timeout_s: float = 30.0) -> None:
        self.address = address
        self.timeout_s = timeout_s
        self.connect_timeout_s = connect_timeout_s
        self._channel = grpc.insecure_channel(address, options=CHANNEL_OPTIONS)

    def _call(self, method, request, name: str, timeout_s: float | None = None):
        try:
            grpc.channel_ready_future(self._channel).result(timeout=self.connect_timeout_s)
        except grpc.FutureTimeoutError:
            raise ServiceError(
                f"{name} on {self.address} failed: UNAVAILABLE: no connection within {self.connect_timeout_s:.0f}s "
                "(the service's process may have died)",
                grpc.StatusCode.UNAVAILABLE,
            ) from None
        try:
            return method(request, timeout=timeout_s or self.timeout_s)
        except grpc.RpcError as error:
            code = error.code()
            raise ServiceError(f"{name} on {self.address} failed: {code.name}: {error.details()}", code) from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class RolloutClient(_Client):
    def __init__(self, address: str, timeout_s: float = 3600.0, connect_timeout_s: float = 30.0) -> None:
        super().__init__(address, timeout_s, connect_timeout_s)
        self._stub = rpb_grpc.RolloutServiceStub(self._channel)

    def generate_groups(
        self, tasks: Sequence[Task], group_size: int, sampling: rpb.SamplingConfig
    ) -> rpb.GenerateGroupsResponse:
        request = rpb.GenerateGroupsRequest(
            tasks=[to_proto(t) for t in tasks], group_size=group_size, sampling=sampling
        )
        return self._call(self._stub.GenerateGroups, request, "RolloutService.GenerateGroups")

    def load_weights(self, version: int, compute_checksum: bool = False) -> rpb.LoadWeightsResponse:
        request = rpb.LoadWeightsRequest(version=version, compute_checksum=compute_checksum)
        return self._call(self._stub.LoadWeights, request, "RolloutService.LoadWeights")

    def join_weight_group(self, group: lpb.OpenWeightGroupResponse, rank: int) -> int:
        """Join the learner's collective weight group as `rank`; returns the ranks the engine took."""
        request = rpb.JoinWeightGroupRequest(
            address=group.address,
            rank=rank,
            world_size=group.world_size,
            backend=group.backend,
            timeout_s=group.timeout_s,
        )
        return self._call(self._stub.JoinWeightGroup, request, "RolloutService.JoinWeightGroup").ranks

    def status(self, compute_checksum: bool = False) -> rpb.GetRolloutStatusResponse:
        request = rpb.GetRolloutStatusRequest(compute_checksum=compute_checksum)
        return self._call(self._stub.GetStatus, request, "RolloutService.GetStatus", timeout_s=120)


class LearnerClient(_Client):
    def __init__(self, address: str, timeout_s: float = 3600.0, connect_timeout_s: float = 30.0) -> None:
        super().__init__(address, timeout_s, connect_timeout_s)
        self._stub = lpb_grpc.LearnerServiceStub(self._channel)

    def train_step(
        self,
        objective: int,
        sequences: Sequence[lpb.TrainSequence],
        publish_weights: bool = True,
        learning_rate: float = 0.0,
        kl_coef: float = 0.0,
        *,
        clip_ratio_low: float = 0.0,
        clip_ratio_high: float = 0.0,
        loss_aggregation: int = lpb.LOSS_AGGREGATION_UNSPECIFIED,
        reset_optimizer: bool = False,
    ) -> lpb.TrainStepResponse:
        """One learner step; the GRPO options at 0 / unspecified take the learner's defaults."""
        request = lpb.TrainStepRequest(
            objective=objective,
            sequences=sequences,
            publish_weights=publish_weights,
            learning_rate=learning_rate,
            kl_coef=kl_coef,
            clip_ratio_low=clip_ratio_low,
            clip_ratio_high=clip_ratio_high,
            loss_aggregation=loss_aggregation,
            reset_optimizer=reset_optimizer,
        )
        return self._call(self._stub.TrainStep, request, "LearnerService.TrainStep")

    def status(self, compute_checksum: bool = False) -> lpb.GetLearnerStatusResponse:
        request = lpb.GetLearnerStatusRequest(compute_checksum=compute_checksum)
        return self._call(self._stub.GetStatus, request, "LearnerService.GetStatus", timeout_s=300)

    def save_checkpoint(self, path: str, training_state: bool = False) -> str:
        """Write a Hugging Face checkpoint at `path`; with `training_state`, also what resuming needs."""
        request = lpb.SaveCheckpointRequest(path=path, training_state=training_state)
        return self._call(self._stub.SaveCheckpoint, request, "LearnerService.SaveCheckpoint").path

    def open_weight_group(self, receivers: int) -> lpb.OpenWeightGroupResponse:
        """Open the collective weight group (rank 0: the learner) for `receivers` rollout engine workers."""
        request = lpb.OpenWeightGroupRequest(receivers=receivers)
        return self._call(self._stub.OpenWeightGroup, request, "LearnerService.OpenWeightGroup")

    def send_weights(self, version: int) -> lpb.SendWeightsResponse:
        """Broadcast the published `version` to the group; returns once every receiver has it."""
        request = lpb.SendWeightsRequest(version=version)
        return self._call(self._stub.SendWeights, request, "LearnerService.SendWeights")

    def restore_checkpoint(self, path: str) -> int:
        """Continue from a checkpoint saved with training state; returns the version the learner is at."""
        request = lpb.RestoreCheckpointRequest(path=path)
        return self._call(self._stub.RestoreCheckpoint, request, "LearnerService.RestoreCheckpoint").version
