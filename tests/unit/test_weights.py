"""Packed weights survive the bytes round trip, and checksums identify weights regardless of order."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch

from mtr.weights import PackedTensor, pack_buckets, pack_state_dict, unpack, weights_checksum


def _weights(seed: int = 0) -> list[tuple[str, torch.Tensor]]:
    g = torch.Generator().manual_seed(seed)
    return [
        ("model.embed_tokens.weight", torch.randn(7, 4, generator=g)),
        ("model.norm.weight", torch.randn(4, generator=g)),
        ("model.layers.0.mlp.up_proj.weight", torch.randn(3, 4, generator=g)),
        ("scalar", torch.tensor(1.5)),
        ("empty", torch.zeros(0, 4)),
    ]


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_pack_unpack_round_trip(dtype):
    weights = _weights()
    packed = pack_state_dict(weights, dtype=dtype)
    assert [p.name for p in packed] == [name for name, _ in weights]
    # flat uint8 arrays (Ray stores them out of band), each its own copy of the tensor
    assert all(p.data.dtype == np.uint8 and p.data.ndim == 1 and p.dtype == dtype for p in packed)
    assert not any(np.shares_memory(p.data, t.numpy()) for p, (_, t) in zip(packed, weights, strict=True))
    restored = dict(unpack(packed))
    for name, tensor in weights:
        expected = tensor.to(getattr(torch, dtype))
        assert restored[name].dtype == expected.dtype
        assert restored[name].shape == expected.shape
        assert torch.equal(restored[name], expected)


def test_pack_handles_non_contiguous_tensors():
    tensor = torch.arange(12, dtype=torch.float32).reshape(3, 4).t()  # a transposed view
    ((name, restored),) = unpack(pack_state_dict([("t", tensor)], dtype="float32"))
    assert torch.equal(restored, tensor)


def test_unpack_rejects_wrong_byte_count():
    bad = PackedTensor(name="w", dtype="float32", shape=(2, 2), data=b"\x00" * 12)
    with pytest.raises(ValueError, match="'w': 12 bytes"):
        list(unpack([bad]))


def test_unsupported_dtype_is_rejected():
    with pytest.raises(ValueError, match="unsupported weight dtype 'int8'"):
        pack_state_dict(_weights(), dtype="int8")


def test_packed_tensor_is_frozen():
    packed = pack_state_dict(_weights()[:1])[0]
    with pytest.raises(dataclasses.FrozenInstanceError):
        packed.name = "other"  # type: ignore[misc]


def test_checksum_ignores_order_and_catches_one_changed_value():
    weights = _weights()
    reference = weights_checksum(weights)
    assert weights_checksum(list(reversed(weights))) == reference
    changed = [(name, t.clone()) for name, t in weights]
    changed[2][1][1, 2] += 0.5
    assert weights_checksum(changed) != reference


def test_checksum_is_taken_in_the_broadcast_dtype():
    # The learner trains in fp32, a rollout engine holds the bf16 broadcast: same weights, same checksum.
    fp32 = _weights()
    received = unpack(pack_state_dict(fp32, dtype="bfloat16"))
    assert weights_checksum(received) == weights_checksum(fp32)
    assert weights_checksum(fp32, dtype="float32") != weights_checksum(fp32, dtype="bfloat16")


def test_checksum_sees_names_and_shapes():
    weights = _weights()
    renamed = [("other", weights[0][1]), *weights[1:]]
    reshaped = [(weights[0][0], weights[0][1].reshape(4, 7)), *weights[1:]]
    assert weights_checksum(renamed) != weights_checksum(weights)
    assert weights_checksum(reshaped) != weights_checksum(weights)


def test_checksum_rejects_duplicate_names():
    with pytest.raises(ValueError, match="appears twice"):
        weights_checksum(_weights() + _weights()[:1])


@pytest.mark.parametrize("dtype", ["bfloat16", "float32"])
def test_weight_file_round_trip_and_checksum(tmp_path, dtype):
    """What a rollout worker maps from the weight file equals what was packed, with the same checksum."""
    from mtr.weights import read_weight_file, write_weight_file

    weights = _weights()
    packed = pack_state_dict(weights, dtype=dtype)
    index = write_weight_file(packed, tmp_path / "w.bin")
    assert [entry[0] for entry in index] == [name for name, _ in weights]
    restored = dict(read_weight_file(tmp_path / "w.bin", index))
    for name, tensor in weights:
        assert torch.equal(restored[name], tensor.to(getattr(torch, dtype))), name
    assert weights_checksum(read_weight_file(tmp_path / "w.bin", index), dtype) == weights_checksum(weights, dtype)


def test_weight_file_index_that_does_not_fit_the_file_is_refused(tmp_path):
    from mtr.weights import read_weight_file, write_weight_file

    index = write_weight_file(pack_state_dict(_weights(), dtype="float32"), tmp_path / "w.bin")
    name, dtype, shape, offset, nbytes = index[0]
    with pytest.raises(ValueError, match="model.embed_tokens.weight"):
        list(read_weight_file(tmp_path / "w.bin", [(name, dtype, (8, 4), offset, nbytes)]))
    with pytest.raises(ValueError, match="offset"):
        list(read_weight_file(tmp_path / "w.bin", [(name, dtype, shape, 10**9, nbytes)]))


def test_buckets_keep_order_and_stay_within_their_size():
    weights = _weights()
    sizes = {p.name: len(p.data) for p in pack_state_dict(weights, "float32")}
    buckets = list(pack_buckets(weights, bucket_bytes=64, dtype="float32"))
    assert [p.name for bucket in buckets for p in bucket] == [name for name, _ in weights]
    assert len(buckets) > 1
    for bucket in buckets:
        assert len(bucket) == 1 or sum(len(p.data) for p in bucket) <= 64
    # The 112-byte embedding is larger than a bucket: it travels alone rather than being split or refused.
    assert sizes["model.embed_tokens.weight"] > 64
    assert [p.name for p in buckets[0]] == ["model.embed_tokens.weight"]


def test_one_big_bucket_holds_everything():
    assert len(list(pack_buckets(_weights(), bucket_bytes=1 << 20))) == 1


def test_bucket_size_must_be_positive():
    with pytest.raises(ValueError, match="bucket_bytes"):
        list(pack_buckets(_weights(), bucket_bytes=0))


def test_packing_a_tensor_in_its_own_dtype_still_copies_it():
    """A learner training in bf16 packs bf16 weights: without a copy the packed version would change with the
    next optimizer step while a rollout host may still be reading it."""
    live = torch.arange(6, dtype=torch.bfloat16)
    (packed,) = pack_state_dict([("w", live)], dtype="bfloat16")
    live.add_(100)
    assert torch.equal(dict(unpack([packed]))["w"], torch.arange(6, dtype=torch.bfloat16))


def test_bytes_data_is_still_read():
    (packed,) = pack_state_dict([("w", torch.arange(3.0))], dtype="float32")
    as_bytes = PackedTensor(packed.name, packed.dtype, packed.shape, packed.data.tobytes())
    assert torch.equal(dict(unpack([as_bytes]))["w"], torch.arange(3.0))


def test_a_private_copy_is_viewed_not_copied_and_others_still_are():
    private = torch.arange(6, dtype=torch.bfloat16)
    (viewed,) = pack_state_dict([("w", private)], dtype="bfloat16", copy=False)
    assert np.shares_memory(viewed.data, private.view(torch.uint8).numpy())
    (converted,) = pack_state_dict([("w", torch.arange(6.0))], dtype="bfloat16", copy=False)  # another dtype
    assert torch.equal(dict(unpack([converted]))["w"], private)


def test_a_weight_file_written_over_holds_only_the_new_version(tmp_path):
    """The rollout host writes each version over the file before last (pages already allocated): a smaller
    version must not keep the old tail, and every tensor reads back as written."""
    from mtr.weights import read_weight_file, write_weight_file

    path = tmp_path / "w.bin"
    write_weight_file(pack_state_dict(_weights(0) + [("extra", torch.randn(5000))]), path)
    big = path.stat().st_size
    weights = _weights(1)
    index = write_weight_file(pack_state_dict(weights), path)
    assert path.stat().st_size < big
    restored = dict(read_weight_file(path, index))
    for name, tensor in weights:
        assert torch.equal(restored[name], tensor.to(torch.bfloat16)), name


def test_served_weights_diff_counts_changed_values_exactly():
    from mtr.weights import ServedWeightsDiff

    diff = ServedWeightsDiff("bfloat16")
    base = torch.zeros(1000)
    diff.remember([("w", base)])
    moved = base.clone()
    moved[:37] = 1.0
    moved[500] = 1e-9  # tiny, but a nonzero bf16 value: its bits differ from 0.0
    list(diff.track([("w", moved)]))
    assert (diff.changed, diff.values) == (38, 1000)
    list(diff.track([("w", moved)]))
    assert diff.changed == 0
