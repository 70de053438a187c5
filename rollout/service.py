"""gRPC `RolloutService`: generate GRPO groups for tasks, load a published weights version in place.

Weights come from the object store until the worker joins the learner's collective weight group
(JoinWeightGroup); from then on LoadWeights receives them from the group.

Engine calls block, so they run on one dedicated thread (the engine is not re-entrant); the event loop
stays free for health checks.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from concurrent.futures import ThreadPoolExecutor

import grpc

from mtr.broadcast import WeightBroadcast
from mtr.grpcutil import CHANNEL_OPTIONS, add_health
from mtr.simclient import SimulatorClient
from mtr.task import from_proto
from mtr.v1 import rollout_service_pb2 as pb
from mtr.v1 import rollout_service_pb2_grpc as pb_grpc
from rollout.agent_loop import LoopLimits, Sample, run_agent_loop
from rollout.metrics import RolloutMetrics
from rollout.vllm_engine import VLLMTurnGenerator

log = logging.getLogger(__name__)


class RolloutServicer(pb_grpc.RolloutServiceServicer):
    def __init__(
        self,
        generator: VLLMTurnGenerator,
        simulator: SimulatorClient,
        broadcast: WeightBroadcast,
        max_model_len: int,
        initial_version: int = 0,
        metrics: RolloutMetrics | None = None,
    ) -> None:
        self._generator = generator
        self._simulator = simulator
        self._broadcast = broadcast
        self._max_model_len = max_model_len
        # Every engine operation runs on this one thread, in arrival order: a weight load requested while a
        # generation runs waits for it, and each generation knows exactly which version it ran with.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="engine")
        self.policy_version = initial_version
        self._weight_group: str | None = None  # address of the collective weight group once joined
        self.metrics = metrics if metrics is not None else RolloutMetrics("rollout")
        self.metrics.policy_version.set(initial_version)

    async def _run(self, fn, *args):
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def GenerateGroups(self, request, context):
        problem = request_problem(request, self._max_model_len)
        if problem:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, f"GenerateGroups: {problem}")
        sampling = request.sampling
        tasks = [from_proto(t) for t in request.tasks]
        limits = LoopLimits(sampling.max_turns, sampling.max_tokens_per_turn, self._max_model_len, sampling.seed)
        start = time.perf_counter()
        samples, version = await self._run(self._generate, tasks, request.group_size, sampling, limits)
        seconds = time.perf_counter() - start
        groups = []
        for task in tasks:
            traces = [self._to_trace(s, version) for s in samples if s.task.id == task.id]
            groups.append(pb.Group(task_id=task.id, traces=traces))
        generated = sum(sum(s.loss_mask) for s in samples)
        self.metrics.observe_generation(generated, len(samples), seconds)
        return pb.GenerateGroupsResponse(
            groups=groups, policy_version=version, generated_tokens=generated, seconds=seconds
        )

    def _generate(self, tasks, group_size, sampling, limits) -> tuple[list[Sample], int]:
        version = self.policy_version  # on the engine thread: no load can land during this generation
        self._generator.set_sampling(sampling.temperature, sampling.top_p or 1.0)
        sequences = len(tasks) * group_size
        self.metrics.inflight.inc(sequences)  # counted here, not on arrival: requests queued for the engine wait
        try:
            loop = run_agent_loop(
                tasks, group_size, self._generator, self._simulator, self._generator.tokenizer, limits
            )
        finally:
            self.metrics.inflight.dec(sequences)
        return loop, version

    def _fetch(self, version: int):
        """Timed on the engine thread, so the time a load waits behind a generation is not counted.

        A bucketed broadcast returns a stream: this finds the version, and `_load` pulls the buckets as it
        writes them out, so both times together are the sync's cost on this worker.
        """
        start = time.perf_counter()
        packed = self._broadcast.fetch(version)
        return packed, time.perf_counter() - start

    def _load(self, packed, version: int) -> tuple[int, float]:
        received, seconds = self._generator.load_packed(packed)
        self.policy_version = version
        return received, seconds

    def _to_trace(self, sample: Sample, version: int) -> pb.Trace:
        return pb.Trace(
            task_id=sample.task.id,
            sample_index=sample.sample_index,
            token_ids=sample.token_ids,
            logprobs=sample.logprobs,
            loss_mask=sample.loss_mask,
            prompt_tokens=sample.prompt_tokens,
            text=sample.text,
            policy_version=version,
            turns=sample.turns,
            tool_calls=[
                pb.ToolCallRecord(
                    name=c.name, arguments_json=c.arguments_json, observation_json=c.observation_json, status=c.status
                )
                for c in sample.tool_calls
            ],
            finish_reason=sample.finish_reason,
        )

    async def JoinWeightGroup(self, request, context):
        if not 0 < request.rank < request.world_size or not request.address or request.timeout_s <= 0:
            message = (
                f"JoinWeightGroup: need an address, 0 < rank < world_size and a timeout; got address "
                f"{request.address!r}, rank {request.rank}, world_size {request.world_size}, "
                f"timeout {request.timeout_s}"
            )
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, message)
        args = (request.address, request.rank, request.world_size, request.backend, request.timeout_s)
        try:
            ranks = await self._run(self._generator.join_weight_group, *args)
        except Exception as exc:  # noqa: BLE001 - the controller needs the reason, not a bare INTERNAL
            await context.abort(grpc.StatusCode.UNAVAILABLE, f"JoinWeightGroup {request.address}: {exc}")
        self._weight_group = request.address
        log.info("joined the weight group at %s as rank %d of %d", request.address, request.rank, request.world_size)
        return pb.JoinWeightGroupResponse(ranks=ranks)

    async def LoadWeights(self, request, context):
        if self._weight_group is not None:
            return await self._receive(request, context)
        try:
            packed, fetch_seconds = await self._run(self._fetch, request.version)
        except KeyError as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        received, seconds = await self._run(self._load, packed, request.version)
        self.metrics.observe_weight_load(request.version, fetch_seconds + seconds, received)
        checksum = await self._run(self._generator.loaded_checksum) if request.compute_checksum else ""
        log.info("loaded weights version %d (%d bytes, %.2fs)", request.version, received, seconds)
        return pb.LoadWeightsResponse(version=request.version, seconds=seconds, bytes=received, checksum=checksum)

    async def _receive(self, request, context):
        """LoadWeights from the collective group: waits in the broadcast the learner's SendWeights makes."""
        try:
            version, received, seconds = await self._run(self._generator.receive_weights, request.compute_checksum)
        except Exception as exc:  # noqa: BLE001 - e.g. the learner released us with its reason
            message = f"LoadWeights {request.version} from the weight group at {self._weight_group}: {exc}"
            await context.abort(grpc.StatusCode.ABORTED, message)
        if version != request.version:
            message = f"LoadWeights: asked for version {request.version}, the learner sent {version} (now loaded)"
            self.policy_version = version
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, message)
        self.policy_version = version
        self.metrics.observe_weight_load(version, seconds, received)
        checksum = await self._run(self._generator.loaded_checksum) if request.compute_checksum else ""
        log.info("received weights version %d from the group (%d bytes, %.2fs)", version, received, seconds)
        return pb.LoadWeightsResponse(version=version, seconds=seconds, bytes=received, checksum=checksum)

    async def GetStatus(self, request, context):
        checksum = await self._run(self._generator.loaded_checksum) if request.compute_checksum else ""
        return pb.GetRolloutStatusResponse(
            policy_version=self.policy_version, checksum=checksum, model=self._generator.model_path
        )


MAX_GROUP_SIZE = 1024


def request_problem(request: pb.GenerateGroupsRequest, max_model_len: int) -> str:
    """What makes a GenerateGroups request unservable ('' when nothing): checked before the engine sees it."""
    sampling = request.sampling
    if not 1 <= request.group_size <= MAX_GROUP_SIZE:
        return f"group_size must be in [1, {MAX_GROUP_SIZE}], got {request.group_size}"
    if sampling.max_turns < 1 or sampling.max_tokens_per_turn < 1:
        return "sampling.max_turns and max_tokens_per_turn must be >= 1"
    if sampling.max_tokens_per_turn > max_model_len:
        return f"sampling.max_tokens_per_turn {sampling.max_tokens_per_turn} exceeds max_model_len {max_model_len}"
    if not (math.isfinite(sampling.temperature) and 0.0 <= sampling.temperature <= 10.0):
        return f"sampling.temperature must be finite and in [0, 10], got {sampling.temperature}"
    if not (math.isfinite(sampling.top_p) and 0.0 <= sampling.top_p <= 1.0):
        return f"sampling.top_p must be in (0, 1] (0 means 1), got {sampling.top_p}"
    seen: set[str] = set()
    for index, message in enumerate(request.tasks):
        try:
            task = from_proto(message)
        except ValueError as error:
            return f"task {index}: {error}"
        if task.id in seen:
            return f"task id {task.id!r} appears twice; a group is keyed by its task id"
        seen.add(task.id)
    return ""


async def create_server(address: str, servicer: RolloutServicer) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server(options=CHANNEL_OPTIONS)
    pb_grpc.add_RolloutServiceServicer_to_server(servicer, server)
    await add_health(server, ["mtr.v1.RolloutService"])
    port = server.add_insecure_port(address)
    await server.start()
    return server, port
