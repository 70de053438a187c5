"""Methods vLLM mixes into its worker process so weights can be swapped in place, without an engine restart.

vLLM calls these through `LLM.collective_rpc("mtr_…")`. Tensors do not survive collective_rpc arguments as
tensors, so weights arrive as packed raw bytes (`mtr.weights.PackedTensor` fields as plain tuples). Names are
prefixed `mtr_` so they never clash with the worker's own methods (e.g. its `update_weights`).

On CPU, vLLM repacks linear weights for oneDNN and drops the original parameters, so the engine's weights
cannot be read back. The checksum is therefore taken over exactly the tensors handed to `reload_weights`;
that they took effect is checked by comparing the engine's log-probs with the learner's (tests/integration).
"""

from __future__ import annotations

from mtr.weights import PackedTensor, unpack, weights_checksum


class MTRWeightSyncExtension:
    def mtr_load_packed(self, packed: list[tuple[str, str, tuple[int, ...], bytes]]) -> int:
        """Load Hugging Face-named tensors in place; returns the bytes received."""
        tensors = [PackedTensor(name, dtype, tuple(shape), data) for name, dtype, shape, data in packed]
        self.reload_weights(weights_iterator=unpack(tensors), is_checkpoint_format=True)
        self._mtr_loaded_checksum = weights_checksum(unpack(tensors))
        return sum(len(t.data) for t in tensors)

    def mtr_loaded_checksum(self) -> str:
        """Checksum of the last weights loaded in place ("" before the first load)."""
        return getattr(self, "_mtr_loaded_checksum", "")
