"""The gRPC face of the learner: LearnerService (TrainStep, GetStatus, SaveCheckpoint, RestoreCheckpoint,
OpenWeightGroup, SendWeights) plus standard health.
It serves any `LearnerLike`: one in-process rank or a Ray group of ranks.

Learner calls block for seconds, so they run in a worker thread (one at a time, in arrival order) while
the event loop keeps answering health checks. Bad requests come back as INVALID_ARGUMENT, learner
failures as INTERNAL, both with a readable message.

Run standalone: `python -m learner.service --config run.yaml --address 127.0.0.1:50061`
(normally the controller starts it inside a Ray actor).
"""

from __future__ import annotations

import argparse
import asyncio
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc

from learner.metrics import LearnerMetrics
from mtr.grpcutil import CHANNEL_OPTIONS, add_health
from mtr.placement import LOOPBACK
from mtr.v1 import learner_service_pb2 as pb
from mtr.v1 import learner_service_pb2_grpc as pb_grpc

if TYPE_CHECKING:
    from learner.engine import LearnerLike, StepResult, TrainSequence
    from mtr.broadcast import PublishInfo

SERVICE_NAME = "mtr.v1.LearnerService"
# Where SaveCheckpoint(training_state=true) puts the training state inside a checkpoint directory.
TRAINING_STATE_DIR = "training_state"

# publish(version) -> PublishInfo (seconds, bytes, served values changed): puts the weights of `version` where
# rollout workers fetch them.
PublishFn = Callable[[int], "PublishInfo"]

# TrainStepRequest.loss_aggregation -> learner.losses' loss_agg_mode.
LOSS_AGG_MODES = {
    pb.LOSS_AGGREGATION_UNSPECIFIED: "token-mean",
    pb.LOSS_AGGREGATION_TOKEN_MEAN: "token-mean",
    pb.LOSS_AGGREGATION_SEQ_MEAN_TOKEN_MEAN: "seq-mean-token-mean",
    pb.LOSS_AGGREGATION_SEQ_MEAN_TOKEN_SUM: "seq-mean-token-sum",
}


def grpo_options(request: pb.TrainStepRequest) -> dict:
    """The GRPO fields of a request as grpo_step's keyword arguments (0 / unspecified: the learner's default)."""
    if request.loss_aggregation not in LOSS_AGG_MODES:
        raise ValueError(f"unknown loss_aggregation {request.loss_aggregation}")
    return {
        "kl_coef": request.kl_coef,
        "clip_eps": request.clip_ratio_low or None,
        "clip_eps_high": request.clip_ratio_high or None,
        "loss_agg_mode": LOSS_AGG_MODES[request.loss_aggregation],
        "reset_optimizer": request.reset_optimizer,
    }


def sequences_from_proto(messages: Sequence[pb.TrainSequence]) -> list[TrainSequence]:
    from learner.engine import TrainSequence

    return [
        TrainSequence(
            token_ids=list(m.token_ids),
            loss_mask=list(m.loss_mask),
            old_logprobs=list(m.old_logprobs) if len(m.old_logprobs) else None,
            advantage=m.advantage,
        )
        for m in messages
    ]


class LearnerServicer(pb_grpc.LearnerServiceServicer):
    def __init__(
        self,
        learner: LearnerLike,
        publish: PublishFn | None,
        metrics: LearnerMetrics | None = None,
        weight_group_host: str = LOOPBACK,
    ) -> None:
        self.learner = learner
        self.publish = publish
        self.weight_group_host = weight_group_host  # where rank 0 of a collective weight group listens
        self.metrics = metrics if metrics is not None else LearnerMetrics()
        self.steps = 0
        self._lock = asyncio.Lock()  # the learner is not thread-safe: one call at a time

    async def _run(self, context: grpc.aio.ServicerContext, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """Run a blocking learner call in a thread; map its exceptions to gRPC status codes."""
        async with self._lock:
            try:
                return await asyncio.to_thread(fn, *args)
            except (ValueError, FileExistsError) as exc:
                code, message = grpc.StatusCode.INVALID_ARGUMENT, f"{what}: {exc}"
            except Exception as exc:  # noqa: BLE001 - any learner failure must reach the caller readably
                code, message = grpc.StatusCode.INTERNAL, f"{what}: {type(exc).__name__}: {exc}"
        await context.abort(code, message)

    def _train(self, request: pb.TrainStepRequest, sequences: list[TrainSequence], lr: float | None) -> StepResult:
        self.learner.set_learning_rate(lr)
        if request.objective == pb.OBJECTIVE_SFT:
            return self.learner.sft_step(sequences)
        return self.learner.grpo_step(sequences, **grpo_options(request))

    async def TrainStep(self, request: pb.TrainStepRequest, context: grpc.aio.ServicerContext) -> pb.TrainStepResponse:
        if request.objective not in (pb.OBJECTIVE_SFT, pb.OBJECTIVE_GRPO):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"TrainStep: unknown objective {request.objective}")
        if request.publish_weights and self.publish is None:
            message = "TrainStep: publish_weights was asked, but this learner has no publisher"
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, message)
        if request.objective == pb.OBJECTIVE_SFT and request.kl_coef != 0:
            message = f"TrainStep: kl_coef {request.kl_coef} applies to GRPO only; SFT has no KL term"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        if request.objective == pb.OBJECTIVE_SFT and request.reset_optimizer:
            message = "TrainStep: reset_optimizer applies to GRPO steps only"
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        sequences = sequences_from_proto(request.sequences)
        lr = request.learning_rate if request.learning_rate > 0 else None
        result = await self._run(context, "TrainStep", self._train, request, sequences, lr)
        self.steps += 1
        objective = "sft" if request.objective == pb.OBJECTIVE_SFT else "grpo"
        self.metrics.observe_step(
            objective, result.seconds, result.tokens, result.loss, result.grad_norm, result.kl, self.learner.version
        )
        publish_seconds, publish_bytes, changed, values = 0.0, 0, 0, 0
        if request.publish_weights:
            info = await self._run(context, "publish", self.publish, self.learner.version)
            publish_seconds, publish_bytes, changed, values = info.seconds, info.bytes, info.changed, info.values
            self.metrics.observe_publish(publish_seconds, publish_bytes)
        return pb.TrainStepResponse(
            version=self.learner.version,
            loss=result.loss,
            grad_norm=result.grad_norm,
            seconds=result.seconds,
            tokens=result.tokens,
            clip_fraction=result.clip_fraction,
            learning_rate=result.learning_rate,
            kl=result.kl,
            publish_seconds=publish_seconds,
            publish_bytes=publish_bytes,
            weights_changed=changed,
            weights_total=values,
        )

    async def GetStatus(
        self, request: pb.GetLearnerStatusRequest, context: grpc.aio.ServicerContext
    ) -> pb.GetLearnerStatusResponse:
        checksum = await self._run(context, "GetStatus", self.learner.checksum) if request.compute_checksum else ""
        return pb.GetLearnerStatusResponse(
            version=self.learner.version, steps=self.steps, checksum=checksum, world_size=self.learner.world_size
        )

    async def SaveCheckpoint(
        self, request: pb.SaveCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> pb.SaveCheckpointResponse:
        if not request.path:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "SaveCheckpoint: the request has no path")
        saved = await self._run(context, "SaveCheckpoint", self._save, request.path, request.training_state)
        return pb.SaveCheckpointResponse(path=str(saved))

    def _save(self, path: str, training_state: bool) -> Path:
        """The Hugging Face checkpoint first: saving it replaces the whole directory, an older state included."""
        saved = self.learner.save_hf(path)
        if training_state:
            self.learner.save_state(Path(saved) / TRAINING_STATE_DIR)
        return saved

    async def RestoreCheckpoint(
        self, request: pb.RestoreCheckpointRequest, context: grpc.aio.ServicerContext
    ) -> pb.RestoreCheckpointResponse:
        if not request.path:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "RestoreCheckpoint: the request has no path")
        state = Path(request.path) / TRAINING_STATE_DIR
        if not state.is_dir():
            message = (
                f"RestoreCheckpoint: {request.path} has no training state ({state} is missing); "
                "save it with SaveCheckpoint(training_state=true)"
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        version = await self._run(context, "RestoreCheckpoint", self.learner.load_state, state)
        return pb.RestoreCheckpointResponse(version=version)

    async def OpenWeightGroup(
        self, request: pb.OpenWeightGroupRequest, context: grpc.aio.ServicerContext
    ) -> pb.OpenWeightGroupResponse:
        if request.receivers < 1:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"OpenWeightGroup: {request.receivers} receivers")
        info = await self._run(
            context, "OpenWeightGroup", self.learner.open_weight_group, request.receivers, self.weight_group_host
        )
        return pb.OpenWeightGroupResponse(
            address=info.address, backend=info.backend, world_size=info.world_size, timeout_s=info.timeout_s
        )

    async def SendWeights(
        self, request: pb.SendWeightsRequest, context: grpc.aio.ServicerContext
    ) -> pb.SendWeightsResponse:
        info = await self._run(context, "SendWeights", self.learner.send_weights, request.version)
        return pb.SendWeightsResponse(
            version=info.version, seconds=info.seconds, bytes=info.bytes, buckets=info.buckets
        )


async def create_server(
    address: str,
    learner: LearnerLike,
    publish: PublishFn | None = None,
    metrics: LearnerMetrics | None = None,
    weight_group_host: str = LOOPBACK,
) -> tuple[grpc.aio.Server, int]:
    """Bind `address` ("host:port"; port 0 picks a free one), start serving, return the server and bound port."""
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    try:
        port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise OSError(f"learner: cannot listen on {address} (in use, or not an address of this host)") from exc
    servicer = LearnerServicer(learner, publish, metrics, weight_group_host)
    pb_grpc.add_LearnerServiceServicer_to_server(servicer, server)
    await add_health(server, [SERVICE_NAME])
    await server.start()
    return server, port


def main(argv: list[str] | None = None) -> None:
    """Serve one learner until interrupted; weights are not published in this standalone mode.

    With `learner.world_size` > 1 the ranks are Ray actors (a local Ray starts when none is running).
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="Run config YAML (defaults apply when omitted).")
    parser.add_argument("--set", action="append", default=[], help="Dotted override, e.g. learner.lr=1e-5.")
    parser.add_argument("--address", default="127.0.0.1:50061", help="host:port to listen on.")
    parser.add_argument("--total-steps", type=int, help="Length of the LR schedule (default: sft + grpo steps).")
    args = parser.parse_args(argv)

    from learner.group import create_learner
    from mtr.config import load_config
    from mtr.hardware import resolve_precision

    config = resolve_precision(load_config(args.config, args.set))
    total_steps = args.total_steps or max(1, config.sft.steps + config.grpo.steps)
    learner = create_learner(config.model.path, config.learner, total_steps)

    async def serve() -> None:
        server, port = await create_server(args.address, learner)
        print(f"learner serving on {args.address.rsplit(':', 1)[0]}:{port}", flush=True)
        await server.wait_for_termination()

    asyncio.run(serve())


if __name__ == "__main__":
    main()
