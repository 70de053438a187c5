"""Methods vLLM mixes into its worker process so weights can be swapped in place, without an engine restart.

vLLM calls these through `LLM.collective_rpc("mtr_…")`. Weights arrive as a file on this node written by the
rollout host (`mtr.weights.write_weight_file`) and an index of plain tuples: the worker maps the file and hands
vLLM views of its pages, so no weight is pickled between vLLM's processes. Names are
prefixed `mtr_` so they never clash with the worker's own methods (e.g. its `update_weights`).

On CPU, vLLM repacks linear weights for oneDNN and drops the original parameters, so the engine's weights
cannot be read back. The checksum is therefore taken over exactly the tensors handed to `reload_weights`;
that they took effect is checked by comparing the engine's log-probs with the learner's (tests/integration).
"""

from __future__ import annotations

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
        return sum(nbytes for *_, nbytes in index)

    def mtr_loaded_checksum(self) -> str:
        """Checksum of the last weights loaded in place ("" before the first load)."""
        loaded = getattr(self, "_mtr_loaded", None)
        return weights_checksum(read_weight_file(*loaded)) if loaded else ""
