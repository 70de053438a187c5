"""Model preparation: the bundled GGUF becomes a checkpoint transformers loads, with ChatML special tokens;
the tiny test model has the intended shape; both are built once and then reused."""

from __future__ import annotations

import json

import pytest

from mtr.modelprep import (
    MARKER_FILE,
    ModelPrepError,
    find_bundled_gguf,
    make_tiny_model,
    prepare_default_model,
    resolve_model_path,
)

pytestmark = pytest.mark.integration


def test_default_model_converts_and_loads():
    from transformers import AutoModelForCausalLM, AutoTokenizer

    directory = prepare_default_model()
    marker = json.loads((directory / MARKER_FILE).read_text())
    assert marker["source"] == find_bundled_gguf().name
    assert resolve_model_path("default") == directory  # second call: the marker makes it instant

    tokenizer = AutoTokenizer.from_pretrained(directory)
    im_end = tokenizer.encode("<|im_end|>", add_special_tokens=False)
    assert len(im_end) == 1 and len(tokenizer.encode("<|im_start|>", add_special_tokens=False)) == 1
    assert tokenizer.eos_token == "<|im_end|>"

    model = AutoModelForCausalLM.from_pretrained(directory)
    assert model.config.num_hidden_layers == 30 and model.config.tie_word_embeddings
    assert getattr(model.config, "quantization_config", None) is None
    assert model.generation_config.eos_token_id == im_end[0]


def test_tiny_model_shape_and_idempotence(tiny_model_dir):
    from transformers import AutoConfig, AutoTokenizer

    config = AutoConfig.from_pretrained(tiny_model_dir)
    assert (config.hidden_size, config.num_hidden_layers, config.head_dim) == (64, 2, 32)
    assert (config.num_attention_heads, config.num_key_value_heads, config.tie_word_embeddings) == (2, 1, True)
    assert AutoTokenizer.from_pretrained(tiny_model_dir).eos_token == "<|im_end|>"
    weights = (tiny_model_dir / "model.safetensors").stat().st_mtime_ns
    assert make_tiny_model(tiny_model_dir, seed=0) == tiny_model_dir
    assert (tiny_model_dir / "model.safetensors").stat().st_mtime_ns == weights  # reused, not rebuilt


def test_tiny_models_of_different_seeds_differ(tmp_path):
    from safetensors.torch import load_file

    a = load_file(make_tiny_model(tmp_path / "a", seed=1) / "model.safetensors")
    b = load_file(make_tiny_model(tmp_path / "b", seed=2) / "model.safetensors")
    assert not all(a[name].equal(b[name]) for name in a)
    assert not list(tmp_path.glob(".*tmp-*"))  # no temp dirs left behind


def test_resolve_model_path_explains_bad_paths(tmp_path):
    with pytest.raises(ModelPrepError, match="is not a directory"):
        resolve_model_path(str(tmp_path / "missing"))
    with pytest.raises(ModelPrepError, match="no config.json"):
        resolve_model_path(str(tmp_path))
