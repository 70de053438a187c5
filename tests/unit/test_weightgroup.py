"""The weight group on loopback with gloo: rank 0 (this process) broadcasts staged weights to receiver processes."""

from __future__ import annotations

import contextlib
import multiprocessing

import pytest
import torch

from mtr.weightgroup import WeightGroup, WeightGroupError, backend_for, stage
from mtr.weights import weights_checksum

TIMEOUT_S = 60.0


def _weights(seed: int) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        ("model.embed_tokens.weight", torch.randn(300, 16, generator=g)),
        ("model.layers.0.mlp.up_proj.weight", torch.randn(32, 16, generator=g)),
        ("model.norm.weight", torch.randn(16, generator=g)),
        ("empty", torch.zeros(0, 4)),
    ]


def _receiver(address: str, rank: int, world_size: int, syncs: int, stop_after: int | None, results) -> None:
    """A rollout engine worker's part: join, then receive `syncs` versions; report version + checksum of each."""
    try:
        group = WeightGroup.join(address, rank, world_size, "gloo", TIMEOUT_S, "cpu")
        for _ in range(syncs):
            version, tensors = group.receive()
            if stop_after is not None:  # a consumer that fails part-way: the rest must still be drained
                for index, _ in enumerate(tensors):
                    if index + 1 == stop_after:
                        tensors.close()
                        break
                results.put((rank, version, "stopped"))
                continue
            results.put((rank, version, weights_checksum(list(tensors), dtype="float32")))
    except Exception as exc:  # noqa: BLE001 - reported to the test
        results.put((rank, -1, f"{type(exc).__name__}: {exc}"))


@contextlib.contextmanager
def _receivers(world_size: int, syncs: int, stop_after: int | None = None):
    """(rank 0's pending group, the receiver processes, their result queue); receivers left over are killed."""
    context = multiprocessing.get_context("spawn")
    results = context.Queue()
    pending = WeightGroup.create("127.0.0.1", world_size, "gloo", TIMEOUT_S, "cpu")
    receivers = [
        context.Process(target=_receiver, args=(pending.address, rank, world_size, syncs, stop_after, results))
        for rank in range(1, world_size)
    ]
    for process in receivers:
        process.start()
    try:
        yield pending, receivers, results
    finally:
        for process in receivers:
            if process.is_alive():
                process.kill()


def _finish(receivers, results, count: int) -> list[tuple]:
    answers = [results.get(timeout=TIMEOUT_S) for _ in range(count)]
    for process in receivers:
        process.join(timeout=TIMEOUT_S)
    return sorted(answers)


def test_every_receiver_gets_each_version_exactly():
    with _receivers(world_size=3, syncs=2) as (pending, receivers, results):
        group = pending.wait()
        sent = []
        for version, seed in ((1, 0), (2, 1)):
            weights = _weights(seed)
            staged = stage(version, weights, "float32", bucket_bytes=4096, device="cpu")
            assert len(staged.buffers) == 2  # the 19 KiB embedding alone, then the rest
            assert group.send(staged) == sum(t.numel() * 4 for _, t in weights) == staged.bytes
            sent.append((version, weights_checksum(weights, dtype="float32")))
        answers = _finish(receivers, results, count=4)
    assert answers == sorted((rank, v, c) for rank in (1, 2) for v, c in sent)


def test_a_receiver_that_stops_early_stays_in_step():
    with _receivers(world_size=2, syncs=2, stop_after=1) as (pending, receivers, results):
        group = pending.wait()
        for version in (1, 2):
            group.send(stage(version, _weights(version), "bfloat16", bucket_bytes=1024, device="cpu"))
        assert _finish(receivers, results, count=2) == [(1, 1, "stopped"), (1, 2, "stopped")]


def test_staging_keeps_a_snapshot():
    weights = _weights(0)
    staged = stage(3, weights, "bfloat16", bucket_bytes=1 << 20, device="cpu")
    expected = weights_checksum(weights)
    weights[0][1].add_(1.0)  # the learner trains on: the staged version must not change
    assert staged.version == 3 and len(staged.buffers) == 1
    flat = staged.buffers[0]
    assert flat.numel() == sum(t.numel() * 2 for _, t in weights)
    assert weights_checksum(_weights(0)) == expected


def test_staging_again_refills_the_previous_buffers():
    first = stage(1, _weights(0), "float32", bucket_bytes=4096, device="cpu")
    buffers = [b.data_ptr() for b in first.buffers]
    second = stage(2, _weights(1), "float32", bucket_bytes=4096, device="cpu", reuse=first)
    assert [b.data_ptr() for b in second.buffers] == buffers  # no new allocation for the same model
    assert torch.equal(torch.cat(second.buffers), torch.cat(stage(2, _weights(1), "float32", 4096, "cpu").buffers))
    regrouped = stage(3, _weights(1), "float32", bucket_bytes=1 << 20, device="cpu", reuse=second)  # one bucket
    assert len(regrouped.buffers) == 1 and regrouped.buffers[0].data_ptr() not in buffers  # sizes differ: new


def test_bad_arguments_are_refused_with_what_was_wrong():
    assert backend_for("cuda:0") == "nccl" and backend_for("cpu") == "gloo"
    with pytest.raises(ValueError, match="backend 'mpi'"):
        WeightGroup.create("127.0.0.1", 2, "mpi", TIMEOUT_S, "cpu")
    with pytest.raises(ValueError, match="at least one receiver"):
        WeightGroup.create("127.0.0.1", 1, "gloo", TIMEOUT_S, "cpu")
    with pytest.raises(ValueError, match="host:port"):
        WeightGroup.join("nowhere", 1, 2, "gloo", TIMEOUT_S, "cpu")
    with pytest.raises(ValueError, match="rank must be in 1..1"):
        WeightGroup.join("127.0.0.1:1", 0, 2, "gloo", TIMEOUT_S, "cpu")
    with pytest.raises(ValueError, match="unsupported weight dtype"):
        stage(1, _weights(0), "int8", 1024, "cpu")


def test_an_unreachable_address_is_named():
    with pytest.raises(WeightGroupError, match="cannot reach the weight group at 127.0.0.1:9"):
        WeightGroup.join("127.0.0.1:9", 1, 2, "gloo", 2.0, "cpu")


def test_a_sender_without_weights_releases_the_receivers_with_its_reason():
    with _receivers(world_size=2, syncs=1) as (pending, receivers, results):
        pending.wait().send_error("weights version 4 was not published")
        ((rank, version, message),) = _finish(receivers, results, count=1)
    assert (rank, version) == (1, -1)
    assert message == "WeightGroupError: the sender has no weights to send: weights version 4 was not published"
