"""Data-parallel learner ranks on Ray and resumable training state, on the tiny model in float32.

Two ranks in Ray actors must step like one in-process rank (same loss, same gradient norm, same KL to each
rank's own reference); a training state saved after steps 1-2 and restored into a fresh learner must give a
bit-identical step 3 (with the KL reference restored on every rank); and the gRPC
SaveCheckpoint(training_state) / RestoreCheckpoint pair must do the same across two servers.
"""

from __future__ import annotations

import json
import math
import time

import grpc
import pytest
import torch

from learner.engine import PolicyLearner, TrainSequence
from mtr.config import LearnerConfig
from mtr.grpcutil import BackgroundServer
from mtr.v1 import learner_service_pb2 as pb
from mtr.v1 import learner_service_pb2_grpc as pb_grpc

pytestmark = pytest.mark.integration

# float32 weights, so runs that differ only in summation order agree to rounding (bf16 would round them apart).
BASE = {"warmup_steps": 1, "lr": 1e-3, "precision": "float32", "micro_batch_tokens": 256}


def _config(**overrides) -> LearnerConfig:
    return LearnerConfig(**{**BASE, **overrides})


def _batch(lengths=(100, 90, 60, 40, 33), seed: int = 0, vocab: int = 500) -> list[TrainSequence]:
    """Fixed random sequences: the first half of each is "prompt" (mask 0), the rest carries loss."""
    g = torch.Generator().manual_seed(seed)
    return [
        TrainSequence(
            token_ids=torch.randint(0, vocab, (n,), generator=g).tolist(),
            loss_mask=[0] * (n // 2) + [1] * (n - n // 2),
        )
        for n in lengths
    ]


def _grpo_batch(seed: int) -> list[TrainSequence]:
    g = torch.Generator().manual_seed(seed)
    return [
        TrainSequence(
            token_ids=s.token_ids,
            loss_mask=s.loss_mask,
            old_logprobs=[(-6.0 + 0.5 * float(torch.randn(1, generator=g))) * m for m in s.loss_mask],
            advantage=float(torch.randn(1, generator=g)),
        )
        for s in _batch(lengths=(70, 52, 41, 20), seed=seed)
    ]


def _to_proto(sequence: TrainSequence) -> pb.TrainSequence:
    return pb.TrainSequence(
        token_ids=sequence.token_ids,
        loss_mask=sequence.loss_mask,
        old_logprobs=sequence.old_logprobs or [],
        advantage=sequence.advantage,
    )


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    from controller.cluster.raystart import start_local_ray

    start_local_ray(num_cpus=4, namespace="mtr-learner-group-test")
    try:
        yield
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def group_host(ray_cluster, tiny_model_dir):
    """The learner host as the controller starts it, with two ranks: a RayLearnerGroup behind LearnerService."""
    from learner.host import start

    # 1 MiB buckets: the tiny model's weights (~7 MB) travel in several, as a large model's would.
    config = _config(world_size=2, weight_bucket_mb=1)
    host = start(str(tiny_model_dir), config.model_dump(), total_steps=10, broadcast="ray")
    try:
        yield host
    finally:
        host.stop()


# Several ranks.


def test_two_ranks_step_like_one(group_host, tiny_model_dir):
    group = group_host.learner
    assert group.world_size == 2 and group.version == 0, "this test needs the group fresh: run it first"
    single = PolicyLearner(tiny_model_dir, _config(), total_steps=10)
    steps = [
        ("sft", _batch(), 0.0),  # ranks get [100, 40, 33] and [90, 60]: 2 vs 1 micro-batches, padded to 2
        ("sft", _batch(lengths=(64,), seed=1), 0.0),  # one sequence: rank 1 joins with a zero-weight micro-batch
        ("grpo", _grpo_batch(seed=2), 0.0),
        ("grpo", _grpo_batch(seed=7), 0.5),  # every rank takes its reference here: KL 0
        ("grpo", _grpo_batch(seed=8)[:1], 0.5),  # rank 1 has no sequence, still holds (and keeps) a reference
        ("grpo", _grpo_batch(seed=9), 0.5),  # KL > 0, measured on both ranks' shares
        ("sft", _batch(seed=3), 0.0),  # its loss reflects the updates before
    ]
    kls = []
    for kind, sequences, kl_coef in steps:
        if kind == "sft":
            a, b = group.sft_step(sequences), single.sft_step(sequences)
        else:
            a = group.grpo_step(sequences, clip_eps=0.2, kl_coef=kl_coef)
            b = single.grpo_step(sequences, clip_eps=0.2, kl_coef=kl_coef)
        assert a.loss == pytest.approx(b.loss, rel=1e-5), kind
        assert a.grad_norm == pytest.approx(b.grad_norm, rel=1e-4), kind
        assert (a.tokens, a.learning_rate) == (b.tokens, b.learning_rate)
        assert a.clip_fraction == pytest.approx(b.clip_fraction, abs=1e-6)
        assert a.kl == pytest.approx(b.kl, rel=1e-4, abs=1e-9), kind
        kls.append(a.kl)
    assert kls[:4] == [0.0] * 4 and kls[5] > 0 and kls[6] == 0.0  # KL 0 before/at the snapshot; SFT has none
    assert single.has_reference and single.version == group.version == 7


def test_group_serves_grpc_and_rank0_publishes(group_host):
    from mtr.broadcast import RayObjectStoreBroadcast
    from mtr.weights import unpack, weights_checksum

    with grpc.insecure_channel(group_host.address) as channel:
        stub = pb_grpc.LearnerServiceStub(channel)
        request = pb.TrainStepRequest(
            objective=pb.OBJECTIVE_SFT, sequences=[_to_proto(s) for s in _batch(seed=4)], publish_weights=True
        )
        response = stub.TrainStep(request, timeout=300)
        assert math.isfinite(response.loss) and response.publish_bytes > 0
        status = stub.GetStatus(pb.GetLearnerStatusRequest(compute_checksum=True), timeout=120)
        assert (status.world_size, status.version) == (2, response.version)
    published = list(RayObjectStoreBroadcast().fetch(response.version))
    assert weights_checksum(unpack(published)) == status.checksum == group_host.learner.checksum()


def test_object_store_broadcast_streams_buckets_in_order(ray_cluster):
    from mtr.broadcast import RayObjectStoreBroadcast
    from mtr.weights import unpack

    g = torch.Generator().manual_seed(0)
    weights = [(f"layer{i}.weight", torch.randn(64, 64, generator=g)) for i in range(5)]  # 16 KiB each in fp32
    registry = "mtr-weight-registry-bucket-test"  # apart from the learner group's versions in this cluster
    broadcast = RayObjectStoreBroadcast(bucket_bytes=40 << 10, registry=registry)
    info = broadcast.publish(7, weights, dtype="float32")
    assert (info.bytes, info.buckets) == (5 * 64 * 64 * 4, 3)  # 2 + 2 + 1 tensors
    reader = RayObjectStoreBroadcast(registry=registry)  # a fresh handle, as a rollout host has
    received = list(unpack(list(reader.fetch(7))))
    assert [name for name, _ in received] == [name for name, _ in weights]
    assert all(torch.equal(got, sent) for (_, got), (_, sent) in zip(received, weights, strict=True))
    with pytest.raises(KeyError, match="version 8 is not in the object store"):
        broadcast.fetch(8)


def test_the_weight_registry_outlives_a_rollout_worker_that_dies(ray_cluster):
    """A worker that dies (SIGKILL, ray.kill) takes the actors it created along. The controller creates the
    registry before any worker, so the worker's reader only finds it, and the next publish still works."""
    import ray

    from mtr.broadcast import RayObjectStoreBroadcast, weight_registry
    from mtr.weights import unpack

    @ray.remote(num_cpus=0)
    class Reader:
        def __init__(self, registry: str) -> None:
            self.broadcast = RayObjectStoreBroadcast(registry=registry)

        def versions(self) -> list[int]:
            return ray.get(self.broadcast._registry.versions.remote())

    weights = [("w", torch.ones(4, 4))]
    for registry, owned_here in (("mtr-registry-owned-by-driver", True), ("mtr-registry-owned-by-reader", False)):
        # Held, as Services holds it: an actor whose last handle is dropped is ended by Ray (and a reader that
        # comes after creates its own, which dies with it).
        owner = weight_registry(name=registry) if owned_here else None
        reader = Reader.remote(registry)
        assert ray.get(reader.versions.remote()) == []
        ray.kill(reader, no_restart=True)
        if owned_here:
            publisher = RayObjectStoreBroadcast(registry=registry)
            publisher.publish(1, weights, dtype="float32")
            assert [name for name, _ in unpack(list(publisher.fetch(1)))] == ["w"]
            assert ray.get(owner.versions.remote()) == [1]
        else:  # what this guards against: a registry a worker created dies with that worker
            deadline = time.monotonic() + 60
            while _registry_alive(registry) and time.monotonic() < deadline:
                time.sleep(0.2)
            assert not _registry_alive(registry)


def _registry_alive(name: str) -> bool:
    import ray

    from mtr.broadcast import REGISTRY_NAMESPACE

    try:
        ray.get_actor(name, namespace=REGISTRY_NAMESPACE)
    except ValueError:
        return False
    return True


def test_group_state_rewinds_every_rank_exactly(group_host, tmp_path):
    """With a KL reference on every rank: rank 0 saves it, every rank restores it."""
    group = group_host.learner
    group.grpo_step(_grpo_batch(seed=4), clip_eps=0.2, kl_coef=0.5)  # takes the reference unless one exists
    saved_at = group.version
    group.save_state(tmp_path / "state")
    assert (tmp_path / "state" / "reference.safetensors").is_file()
    first = group.grpo_step(_grpo_batch(seed=5), clip_eps=0.2, kl_coef=0.5)
    after_first = group.checksum("float32")
    assert first.kl > 0
    assert group.load_state(tmp_path / "state") == saved_at == group.version
    second = group.grpo_step(_grpo_batch(seed=5), clip_eps=0.2, kl_coef=0.5)
    assert (second.loss, second.grad_norm, second.kl) == (first.loss, first.grad_norm, first.kl)
    assert group.checksum("float32") == after_first
    with pytest.raises(ValueError, match="does not exist"):
        group.load_state(tmp_path / "missing")
    assert group.sft_step(_batch(seed=6)).tokens > 0  # a refused restore leaves the group usable


# Resumable state of one rank.


def test_restored_state_continues_exactly(tiny_model_dir, tmp_path):
    a = PolicyLearner(tiny_model_dir, _config(), total_steps=6)
    a.sft_step(_batch(seed=10))
    a.set_learning_rate(4e-4)  # the override is part of the state
    a.sft_step(_batch(seed=11))
    a.save_state(tmp_path / "state")
    expected = a.sft_step(_batch(seed=12))

    b = PolicyLearner(tiny_model_dir, _config(), total_steps=6)
    assert b.load_state(tmp_path / "state") == 2 == b.version
    got = b.sft_step(_batch(seed=12))
    assert (got.loss, got.grad_norm, got.learning_rate) == (expected.loss, expected.grad_norm, 4e-4)
    assert b.checksum("float32") == a.checksum("float32")
    for learner in (a, b):
        learner.set_learning_rate(None)  # back on the schedule, at the restored position
    rate_a, rate_b = a.sft_step(_batch(seed=13)).learning_rate, b.sft_step(_batch(seed=13)).learning_rate
    assert rate_a == rate_b != 4e-4


def test_bad_training_state_directories_are_refused_by_path(tiny_model_dir, tmp_path):
    learner = PolicyLearner(tiny_model_dir, _config(), total_steps=4)
    with pytest.raises(ValueError, match=f"{tmp_path / 'nowhere'} does not exist"):
        learner.load_state(tmp_path / "nowhere")
    learner.save_state(tmp_path / "state")
    (tmp_path / "state" / "mtr_state.json").write_text("{not json")
    with pytest.raises(ValueError, match="mtr_state.json is unreadable"):
        learner.load_state(tmp_path / "state")
    (tmp_path / "state" / "mtr_state.json").write_text(json.dumps({"format": 1, "version": "2", "world_size": 1}))
    with pytest.raises(ValueError, match="is corrupt"):
        learner.load_state(tmp_path / "state")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a training state"):
        learner.save_state(tmp_path / "other")
    assert learner.version == 0


def test_grpc_save_with_training_state_then_restore_on_a_fresh_server(tiny_model_dir, tmp_path):
    from learner.service import create_server

    def serve(learner: PolicyLearner) -> BackgroundServer:
        return BackgroundServer(lambda address: create_server(address, learner))

    def step(stub, seed: int) -> pb.TrainStepResponse:
        request = pb.TrainStepRequest(objective=pb.OBJECTIVE_SFT, sequences=[_to_proto(s) for s in _batch(seed=seed)])
        return stub.TrainStep(request, timeout=120)

    ckpt = str(tmp_path / "ckpt")
    first = serve(PolicyLearner(tiny_model_dir, _config(), total_steps=6))
    try:
        with grpc.insecure_channel(first.address) as channel:
            stub = pb_grpc.LearnerServiceStub(channel)
            step(stub, 20)
            step(stub, 21)
            request = pb.SaveCheckpointRequest(path=ckpt, training_state=True)
            assert stub.SaveCheckpoint(request, timeout=120).path == ckpt
            stub.SaveCheckpoint(pb.SaveCheckpointRequest(path=str(tmp_path / "weights_only")), timeout=120)
            expected = step(stub, 22)
            expected_checksum = stub.GetStatus(pb.GetLearnerStatusRequest(compute_checksum=True), timeout=60).checksum
    finally:
        first.stop(grace=0.5)
    assert (tmp_path / "ckpt" / "config.json").is_file()
    assert (tmp_path / "ckpt" / "training_state" / "mtr_state.json").is_file()

    second = serve(PolicyLearner(tiny_model_dir, _config(), total_steps=6))
    try:
        with grpc.insecure_channel(second.address) as channel:
            stub = pb_grpc.LearnerServiceStub(channel)
            with pytest.raises(grpc.RpcError) as error:
                stub.RestoreCheckpoint(pb.RestoreCheckpointRequest(path=str(tmp_path / "weights_only")), timeout=60)
            assert error.value.code() == grpc.StatusCode.INVALID_ARGUMENT
            assert "has no training state" in error.value.details()

            assert stub.RestoreCheckpoint(pb.RestoreCheckpointRequest(path=ckpt), timeout=120).version == 2
            got = step(stub, 22)
            status = stub.GetStatus(pb.GetLearnerStatusRequest(compute_checksum=True), timeout=60)
    finally:
        second.stop(grace=0.5)
    assert (got.version, got.loss, got.grad_norm) == (3, expected.loss, expected.grad_norm)
    assert (status.checksum, status.world_size) == (expected_checksum, 1)
