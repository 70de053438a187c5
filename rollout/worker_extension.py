"""Methods vLLM mixes into its worker process so weights can be swapped in place, without an engine restart.

vLLM calls these through `LLM.collective_rpc("mtr_…")`. Weights arrive one of two ways:
- object store: as a file on this node written by the rollout host (`mtr.weights.write_weight_file`) and an
  index of plain tuples; the worker maps the file and hands vLLM views of its pages, so no weight is pickled
  between vLLM's processes;
- collective: straight into this process from the learner's weight group (`mtr.weightgroup`), bucket by
  bucket, each loaded while the next is in flight.
Names are prefixed `mtr_` so they never clash with the worker's own methods (e.g. its `update_weights`).

On CPU, vLLM repacks linear weights for oneDNN and drops the original parameters, so the engine's weights
cannot be read back. The checksum is therefore taken over exactly the tensors handed to `reload_weights`;
that they took effect is checked by comparing the engine's log-probs with the learner's (tests/integration).
"""

from __future__ import annotations

from collections.abc import Iterator

from mtr.weights import WeightFileIndex, read_weight_file, weights_checksum


class MTRWeightSyncExtension:
    def mtr_load_file(self, path: str, index: WeightFileIndex) -> int:
        """Load Hugging Face-named tensors in place from a weight file on this node; returns the bytes read.

        The file stays where it is (its owner replaces it at the next load), so the checksum is computed only
        when asked for: hashing every load cost about as much as the load itself.
        """
        index = [(name, dtype, tuple(shape), offset, nbytes) for name, dtype, shape, offset, nbytes in index]
        self.reload_weights(weights_iterator=read_weight_file(path, index), is_checkpoint_format=True)
        self._mtr_loaded = (path, index)
        self._mtr_received_checksum = None
        return sum(nbytes for *_, nbytes in index)

    def mtr_join_weight_group(self, address: str, first_rank: int, world_size: int, backend: str, timeout: float):
        """Join the learner's weight group as rank `first_rank` + this worker's rank; returns the rank taken."""
        import torch

        from mtr.weightgroup import WeightGroup

        rank = first_rank + int(getattr(self, "rank", 0))
        device = str(getattr(self, "device", None) or torch.device("cpu"))
        group = getattr(self, "_mtr_group", None)
        if group is not None and (group.address, group.rank) == (address, rank):
            return rank  # already a member (a repeated join)
        self._mtr_group = WeightGroup.join(address, rank, world_size, backend, timeout, device)
        return rank

    def mtr_receive_weights(self, compute_checksum: bool = False) -> tuple[int, int]:
        """Receive the version the learner broadcasts and load it in place; returns (version, bytes).

        With `compute_checksum` the received tensors are kept until the load is done and hashed, which costs
        a second copy of the weights for that one sync; otherwise each bucket is freed once loaded.
        """
        group = getattr(self, "_mtr_group", None)
        if group is None:
            raise RuntimeError("this engine worker has not joined a weight group (JoinWeightGroup)")
        version, tensors = group.receive()
        counted = _Counting(tensors, keep=compute_checksum)
        try:
            self.reload_weights(weights_iterator=counted, is_checkpoint_format=True)
        finally:
            for _ in tensors:  # if the load stopped early (or never started), receive the rest: the group stays in step
                pass
        self._mtr_loaded = None
        self._mtr_received_checksum = weights_checksum(counted.kept) if compute_checksum else None
        return version, counted.bytes

    def mtr_loaded_checksum(self) -> str:
        """Checksum of the last weights loaded in place ("" before the first load, or when a collective load
        was not asked to keep one)."""
        if getattr(self, "_mtr_received_checksum", None):
            return self._mtr_received_checksum
        loaded = getattr(self, "_mtr_loaded", None)
        return weights_checksum(read_weight_file(*loaded)) if loaded else ""


class _Counting:
    """Passes (name, tensor) pairs through, counting bytes; keeps them when a checksum is wanted."""

    def __init__(self, tensors: Iterator, keep: bool) -> None:
        self._tensors = tensors
        self._keep = keep
        self.kept: list = []
        self.bytes = 0

    def __iter__(self):
        for name, tensor in self._tensors:
            self.bytes += tensor.numel() * tensor.element_size()
            if self._keep:
                self.kept.append((name, tensor))
            yield name, tensor
