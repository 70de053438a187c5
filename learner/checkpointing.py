"""What a learner writes and reads back: Hugging Face checkpoints and exact-continuation training states.

`Checkpointing` is a part of `PolicyLearner` (a mixin: it uses the learner's engine, ranks and reference);
it lives here so the engine module holds the training step and this one the files. A training state is a
directory: DeepSpeed's checkpoint (module, optimizer moments, fp32 masters, one shard per rank), each rank's
RNG, the KL reference when there is one, and `mtr_state.json`, written last, which marks it complete.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import random
import shutil
import tempfile
from pathlib import Path

import torch

from mtr.chattemplate import apply_to as apply_chat_template
from mtr.weights import ADAPTER_DIR

# Layout of a training-state directory (see PolicyLearner.save_state).
STATE_FILE = "mtr_state.json"  # written last: its presence marks a complete state
STATE_FORMAT = 1
DEEPSPEED_TAG = "deepspeed"  # DeepSpeed's module + optimizer checkpoint lives in <dir>/deepspeed/
REFERENCE_FILE = "reference.safetensors"  # the frozen KL reference, in training precision (when there is one)


def rng_file(rank: int) -> str:
    return f"rng_rank{rank}.pt"


def is_state_dir_or_empty(path: Path) -> bool:
    if not path.is_dir():
        return False
    names = {p.name for p in path.iterdir()}
    return not names or STATE_FILE in names or DEEPSPEED_TAG in names


def read_state_record(path: Path) -> dict:
    """The `mtr_state.json` of a training-state directory, checked; ValueError naming the path otherwise."""
    meta = path / STATE_FILE
    if not meta.is_file():
        what = "does not exist" if not path.exists() else f"has no {STATE_FILE} (not a complete training state)"
        raise ValueError(f"training state {path} {what}")
    try:
        record = json.loads(meta.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ValueError(f"training state {meta} is unreadable: {exc}") from exc
    expected = {"format": int, "version": int, "world_size": int}
    if not isinstance(record, dict) or any(not isinstance(record.get(k), t) for k, t in expected.items()):
        raise ValueError(f"training state {meta} is corrupt: expected integer {sorted(expected)}, got {record!r}")
    if record["format"] != STATE_FORMAT:
        raise ValueError(f"training state {meta} has format {record['format']}, this learner reads {STATE_FORMAT}")
    reference = record.get("reference")
    if reference is not None and reference != REFERENCE_FILE:
        raise ValueError(f"training state {meta} is corrupt: reference {reference!r}")
    lr = record.get("constant_lr")
    if lr is not None and not (isinstance(lr, int | float) and math.isfinite(lr) and lr > 0):
        raise ValueError(f"training state {meta} is corrupt: constant_lr {lr!r}")
    return record


def capture_rng() -> dict:
    import numpy as np

    state = {"torch": torch.get_rng_state(), "python": random.getstate(), "numpy": np.random.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: dict) -> None:
    import numpy as np

    torch.set_rng_state(state["torch"])
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


class LearnerError(RuntimeError):
    """The learner cannot continue (non-finite loss or gradient); restart from the last checkpoint."""


class Checkpointing:
    """Save and restore for `PolicyLearner` (see the module docstring)."""

    def save_hf(self, path: str | Path) -> Path:
        """Save a Hugging Face checkpoint (weights in training precision, config, tokenizer) at `path`.

        Written into a temp dir and renamed, so a crash never leaves a half checkpoint. An existing
        checkpoint at `path` is replaced; any other non-empty directory there is an error.
        """
        from transformers import AutoTokenizer

        target = Path(path)
        if target.exists() and any(target.iterdir()) and not (target / "config.json").is_file():
            raise FileExistsError(f"save_hf: {target} exists and is not a checkpoint; refusing to replace it")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.tmp-", dir=target.parent))
        tmp.chmod(0o755)  # mkdtemp makes it private; rollout workers may run as another user
        try:
            state = dict(self.named_weights())  # under LoRA: merged, so any HF loader reads a plain model
            if self._hf.config.tie_word_embeddings:
                state.pop("lm_head.weight", None)  # re-tied on load; saving it would store the embedding twice
            self._hf.save_pretrained(tmp, state_dict=state, safe_serialization=True)
            if self.config.lora.enabled:  # and the adapter alone, for peft users and adapter-only serving
                self._engine.module.save_pretrained(tmp / ADAPTER_DIR, state_dict=self.adapter_weights())
            tokenizer = AutoTokenizer.from_pretrained(self.model_path)
            apply_chat_template(tokenizer)  # served with `vllm serve`, it renders the trace grammar (mtr.chattemplate)
            tokenizer.save_pretrained(tmp)
            if target.exists():
                shutil.rmtree(target)
            os.rename(tmp, target)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return target

    def save_state(self, path: str | Path) -> Path:
        """Write everything an exact continuation needs into directory `path`; every rank must call it.

        Layout: `deepspeed/` (DeepSpeed's checkpoint: module, optimizer moments and fp32 master weights, one
        optimizer shard per rank), `rng_rank<r>.pt` (each rank's torch/Python/NumPy RNG states),
        `reference.safetensors` (the KL reference, if one exists; every rank holds the same, rank 0 writes it)
        and, written last by rank 0 once all ranks are done, `mtr_state.json` (version, learning-rate override,
        world size, whether there is a reference).
        Saving again into the same directory replaces the state. Under several ranks `path` must be storage
        every rank sees.
        """
        target = Path(path)
        if target.exists() and not is_state_dir_or_empty(target):
            raise FileExistsError(f"save_state: {target} exists and is not a training state; refusing to write there")
        meta = target / STATE_FILE
        if self._rank == 0:
            target.mkdir(parents=True, exist_ok=True)
            meta.unlink(missing_ok=True)  # until the new state is complete, the directory is not a valid one
        self._barrier()
        # Under LoRA only the adapters are saved (the frozen base is the model the learner was built on).
        self._engine.save_checkpoint(
            str(target),
            tag=DEEPSPEED_TAG,
            client_state={"mtr_version": self._version},
            exclude_frozen_parameters=self.config.lora.enabled,
        )
        torch.save(capture_rng(), target / rng_file(self._rank))
        if self._rank == 0:
            self._save_reference(target / REFERENCE_FILE)
        self._barrier()
        if self._rank == 0:
            record = {
                "format": STATE_FORMAT,
                "version": self._version,
                "constant_lr": self._constant_lr,
                "world_size": self._world_size,
                "total_steps": self.total_steps,
                "reference": REFERENCE_FILE if self._reference is not None else None,
            }
            tmp = meta.with_suffix(".tmp")
            tmp.write_text(json.dumps(record, indent=2))
            os.replace(tmp, meta)
        self._barrier()
        return target

    def load_state(self, path: str | Path) -> int:
        """Restore a state written by `save_state` (every rank must call it); returns the version it continues from.

        Weights, optimizer, schedule position, learning-rate override, KL reference (or its absence) and RNG
        come back as they were, so the next step equals the step the saving learner would have taken. The
        learner must have been built on the same base model, config and world size.
        """
        if self._failure is not None:
            raise LearnerError(f"learner is unusable after an earlier failure ({self._failure}); restore a new one")
        target = Path(path)
        record = read_state_record(target)
        if record["world_size"] != self._world_size:
            raise ValueError(
                f"training state {target} was saved by {record['world_size']} ranks; this learner has "
                f"{self._world_size} (DeepSpeed's optimizer shards are per rank)"
            )
        rng_path = target / rng_file(self._rank)
        if not rng_path.is_file():
            raise ValueError(f"training state {target} has no {rng_path.name} for rank {self._rank}")
        reference = self._load_reference(target, record.get("reference"))  # first: a bad file changes nothing
        try:
            loaded, _ = self._engine.load_checkpoint(
                str(target),
                tag=DEEPSPEED_TAG,
                load_optimizer_states=True,
                load_lr_scheduler_states=False,
                load_module_strict=not self.config.lora.enabled,  # a LoRA state holds the adapters only
            )
            rng = torch.load(rng_path, weights_only=False)  # our own file: holds Python/NumPy state tuples
        except (OSError, RuntimeError, KeyError, EOFError, pickle.UnpicklingError) as exc:
            raise ValueError(f"training state {target} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        if loaded is None:
            raise ValueError(f"training state {target} has no DeepSpeed checkpoint under {DEEPSPEED_TAG}/")
        self._reference = reference
        self._served.clear()  # the restored weights become the baseline at the next step
        self._version = int(record["version"])
        self._constant_lr = record["constant_lr"]
        restore_rng(rng)
        return self._version

    def _save_reference(self, path: Path) -> None:
        """Write the reference in its own precision (bit-exact), or remove a stale one when there is none."""
        from safetensors.torch import save_model

        if self._reference is None:
            path.unlink(missing_ok=True)
            return
        tmp = path.with_suffix(".tmp")
        save_model(self._reference, str(tmp))  # drops the tied lm_head duplicate; load_model re-ties it
        os.replace(tmp, path)

    def _load_reference(self, state_dir: Path, name: str | None) -> torch.nn.Module | None:
        """The reference a state recorded (None when it had none, so a restored run is as the saved one was)."""
        if name is None:
            return None
        from safetensors import SafetensorError
        from safetensors.torch import load_model

        path = state_dir / name
        if not path.is_file():
            raise ValueError(f"training state {state_dir} records a KL reference, but {path} is missing")
        reference = self._new_reference_module()
        try:
            load_model(reference, str(path), strict=True, device=self._device)
        except (OSError, RuntimeError, SafetensorError) as exc:
            raise ValueError(f"KL reference {path} cannot be loaded: {type(exc).__name__}: {exc}") from exc
        return reference

    def _barrier(self) -> None:
        if self._world_size > 1:
            torch.distributed.barrier()
