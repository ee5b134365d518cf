"""The rest of the tool on a gated decoder (issue 18 item 6): tiny random Llama models, CPU, no downloads.

* callback: a seeded ``CausalLM`` fit of a tiny ``LlamaForCausalLM`` (attention dropout on, so RNG matters)
  with ``NeuroLensCallback`` probing at 2 points ends with the points in the history, finite scores, and
  weights / optimizer state / batch order bit-identical to the same fit without the callback;
* compare: ``neurolens_lightning.compare`` of a 4-layer Llama and a 2-layer GPT-2 on one concept writes a
  comparison.json with both models aligned by relative depth (0, 1/3, 2/3, 1 vs 0, 1);
* DDP: ``scan`` of a tiny Llama inside a torchrun-style 2-process gloo launch gives every rank the
  single-process scores (to 1e-6). The ranks are subprocesses of this file with a hard timeout.

Run ``python tests/test_decoder_integration.py --worker OUT`` (with torchrun's environment) to run one rank by hand.
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

TESTS = Path(__file__).resolve().parent
ROOT = TESTS.parent
for _p in (str(TESTS), str(ROOT)):
    if _p not in sys.path:
        sys.path.insert(0, _p)

from helpers import (TokenSequences, make_word_tokenizer, nested_tensors, small_probe_dict,  # noqa: E402
                     start_ranks, tiny_gpt2, wait_ranks)

SEQ_LEN, N_SEQ = 12, 16
DDP_TIMEOUT_S = 180

pytestmark = pytest.mark.usefixtures("one_thread")


def tiny_llama(tok: Any, n_layers: int = 2, seed: int = 0, attention_dropout: float = 0.0) -> torch.nn.Module:
    """A random tiny ``LlamaForCausalLM`` sized to ``tok`` (as in test_gated_decoders.py), in eval mode."""
    import transformers as T

    cfg = T.LlamaConfig(vocab_size=len(tok), pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id,
                        eos_token_id=tok.eos_token_id, max_position_embeddings=64, num_hidden_layers=n_layers,
                        hidden_size=32, num_attention_heads=4, num_key_value_heads=2, intermediate_size=48,
                        attention_dropout=attention_dropout)
    torch.manual_seed(seed)
    return T.LlamaForCausalLM(cfg).eval()


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer("gpt2")


# ------------------------------------------------------------------------------------------ callback


def _recording_module(tok: Any):
    from neurolens_lightning.training.finetune import CausalLM

    class _RecordingLM(CausalLM):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, **kwargs)
            self.seen: list[list[int]] = []

        def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
            self.seen.append(batch["idx"].tolist())
            return super().training_step(batch, batch_idx)

    return _RecordingLM(tiny_llama(tok, attention_dropout=0.1), tok, lr=3e-3)


def _fit(tok: Any, callbacks: list, max_steps: int = 2):
    import lightning.pytorch as pl

    pl.seed_everything(0, verbose=False)
    module = _recording_module(tok)
    loader = torch.utils.data.DataLoader(TokenSequences(tok, N_SEQ, SEQ_LEN), batch_size=4, shuffle=True)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=max_steps, callbacks=callbacks, logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                         num_sanity_val_steps=0, deterministic=True)
    trainer.fit(module, loader)
    assert trainer.global_step == max_steps
    return module, trainer


def test_callback_on_llama_probes_and_leaves_the_fit_bit_identical(tok):
    from neurolens_lightning.adapters import DecoderAdapter, adapter_for
    from neurolens_lightning.training.callback import NeuroLensCallback
    from neurolens_lightning.hooks import count_hooks

    ref, ref_tr = _fit(tok, callbacks=[])
    cb = NeuroLensCallback(small_probe_dict(), every_n_train_steps=2, importance=True, top_k=5, batch_size=8,
                           probe_at_end=False)
    got, got_tr = _fit(tok, callbacks=[cb])

    # the adapter the callback builds for the wrapped network is the gated decoder's, not a fallback
    assert isinstance(adapter_for(got.model, tok), DecoderAdapter)
    assert [(p["step"], p["reason"]) for p in cb.history] == [(0, "start"), (2, "step")]
    for p in cb.history:
        assert p["concept"] == "small_royalty" and len(p["top"]) == 5
        assert set(p["max_selectivity_per_layer"]) == {"0", "1"}
        assert math.isfinite(p["most_selective_mean"])
        for c in p["top"]:
            assert all(math.isfinite(c[k]) for k in ("selectivity", "consistency", "importance", "score")), c
    assert [e["step"] for e in cb.score_log] == [0, 2]
    for e in cb.score_log:
        assert e["units"] == [48, 48]
        assert torch.isfinite(e["selectivity"].float()).all()
    # the fit moved the network between the points: the two probes did not see the same weights
    assert not torch.equal(cb.score_log[0]["selectivity"], cb.score_log[1]["selectivity"])

    assert got.model.config.attention_dropout > 0 and got.training  # dropout on: RNG matters
    assert all(m.training for m in got.modules())  # train mode restored after the probes
    assert count_hooks(got) == 0  # the down projections' input hooks were removed
    assert got.seen == ref.seen and len(got.seen) == 2
    ref_sd, got_sd = ref.state_dict(), got.state_dict()
    assert ref_sd.keys() == got_sd.keys()
    for k in ref_sd:
        assert torch.equal(ref_sd[k], got_sd[k]), f"weight {k} differs"
    ref_opt, got_opt = nested_tensors(ref_tr.optimizers[0].state_dict()), nested_tensors(got_tr.optimizers[0].state_dict())
    assert ref_opt.keys() == got_opt.keys() and len(ref_opt) > 0
    for k in ref_opt:
        assert torch.equal(ref_opt[k], got_opt[k]), f"optimizer state {k} differs"
    key = "model.model.layers.0.mlp.down_proj.weight"  # the weights did move: the comparison is not vacuous
    assert not torch.equal(tiny_llama(tok).state_dict()[key[len("model."):]], got_sd[key])


# ------------------------------------------------------------------------------------------ compare


def test_compare_llama_and_gpt2_by_relative_depth(tok, tmp_path):
    from neurolens_lightning.compare import ModelSpec, compare

    out = tmp_path / "llama-vs-gpt2"
    comp = compare([ModelSpec("llama4", tiny_llama(tok, n_layers=4, seed=1), tokenizer=tok),
                    ModelSpec("gpt2x2", tiny_gpt2(tok, n_layer=2), tokenizer=tok)],
                   small_probe_dict(), out=out, top_k=3, importance=False, batch_size=8, grid=7, report=False,
                   fdr_q=1.0, device="cpu")
    on_disk = json.loads((out / "comparison.json").read_text(encoding="utf-8"))
    assert on_disk["models"] == json.loads(json.dumps(comp["models"]))
    assert on_disk["concept"] == "small_royalty" and on_disk["modality"] == "text"
    llama, gpt2 = on_disk["models"]
    assert (llama["name"], gpt2["name"]) == ("llama4", "gpt2x2")
    assert (llama["n_layers"], gpt2["n_layers"]) == (4, 2)
    assert [l["rel_depth"] for l in llama["layers"]] == pytest.approx([0, 1 / 3, 2 / 3, 1], abs=1e-6)
    assert [l["rel_depth"] for l in gpt2["layers"]] == [0.0, 1.0]
    assert [l["n_units"] for l in llama["layers"]] == [48] * 4  # the gated MLP's intermediate units
    assert [l["n_units"] for l in gpt2["layers"]] == [128] * 2
    for m in (llama, gpt2):
        assert not m.get("error")
        scan = json.loads((out / m["scan_dir"] / "results.json").read_text(encoding="utf-8"))
        assert scan["model_info"]["n_layers"] == m["n_layers"]
        for n in m["top_neurons"]:
            assert n["rel_depth"] == pytest.approx(n["layer"] / (m["n_layers"] - 1), abs=1e-6)
            assert math.isfinite(n["selectivity"])
    # at fdr_q = 1 both random models have a depth profile, so the divergence is a number
    js = on_disk["divergence"]["matrix"][0][1]
    assert js is not None and 0.0 <= js <= 1.0


# ------------------------------------------------------------------------------------------ DDP


def _scan_llama(tok: Any):
    from neurolens_lightning import scan

    return scan(tiny_llama(tok, n_layers=2, seed=2), small_probe_dict(), tokenizer=tok, top_k=3, importance=True,
                batch_size=4, device="cpu")


def _worker(out: Path) -> None:
    """One rank of a torchrun-style launch (RANK / WORLD_SIZE / MASTER_* set by the parent)."""
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo")
    try:
        result = _scan_llama(make_word_tokenizer("gpt2"))
        s = result.scores
        torch.save({"rank": dist.get_rank(), "world": dist.get_world_size(),
                    "selectivity": s.selectivity.clone(), "consistency": s.consistency.clone(),
                    "importance": s.importance.clone(), "score": s.score.clone(),
                    "top": [(c["layer"], c["index"]) for c in result.ranked(3)]},
                   out / f"rank{dist.get_rank()}.pt")
    finally:
        dist.destroy_process_group()


def test_llama_scan_under_two_gloo_processes_equals_one_process(tok, tmp_path):
    procs = start_ranks(Path(__file__).resolve(), ["--worker", tmp_path], 2, tmp_path)
    single = _scan_llama(tok)  # the reference, in this process, while the ranks start up
    wait_ranks(procs, DDP_TIMEOUT_S, "2-process scan")

    ref = single.scores
    assert torch.isfinite(ref.selectivity).all() and ref.selectivity.std() > 0  # not vacuous
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    assert [(d["rank"], d["world"]) for d in ranks] == [(0, 2), (1, 2)]
    for d in ranks:
        for key in ("selectivity", "consistency", "importance", "score"):
            torch.testing.assert_close(d[key], getattr(ref, key), rtol=0, atol=1e-6, equal_nan=True,
                                       msg=lambda m, k=key: f"{k}: {m}")
        assert d["top"] == [(c["layer"], c["index"]) for c in single.ranked(3)]


if __name__ == "__main__":
    if len(sys.argv) >= 3 and sys.argv[1] == "--worker":
        _worker(Path(sys.argv[2]))
    else:
        print(__doc__)
