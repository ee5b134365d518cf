"""One ScanSettings drives every entry point: ``scan()``, ``neurolens eval`` (``run_eval``), the
``NeuroLensCallback`` (a probe inside ``Trainer.fit``), ``compare()`` and ``dose_response`` (steer).

The same tiny GPT-2 (saved to a folder), the same probe and one settings object (split seed 3, holdout 0.5,
interchange ablation of the top 3 plus two named neurons): every entry point must rank on the same examples,
give the same scores (d, consistency, importance to 1e-6) and the same causal verdicts (Δ, p to the tolerance
of eval's Lightning loop; verdicts exactly), and steer on the same split. A settings field that an entry point
ignored would change its split, its tested set or its null, and fail here.
"""

from __future__ import annotations

import torch
from helpers import make_word_tokenizer, small_probe_dict, tiny_gpt2

import neurolens_lightning as nl
from neurolens_lightning.concepts import load_concept
from neurolens_lightning.settings import ScanSettings

import pytest

pytestmark = pytest.mark.usefixtures("one_thread")

SETTINGS = ScanSettings(top_k=3, ablate=True, null_samples=20, seed=3, holdout=0.5, batch_size=4,
                        neurons=["1:3", "0:5"], importance=True)
TOL = 1e-6


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    tok = make_word_tokenizer("gpt2")
    model = tiny_gpt2(tok, n_layer=2)
    d = tmp_path_factory.mktemp("spine") / "tiny-gpt2"
    model.save_pretrained(d)
    tok.save_pretrained(d)
    ref = nl.scan(str(d), small_probe_dict(), device="cpu", settings=SETTINGS)
    return {"dir": d, "tok": tok, "ref": ref}


def _same_scores(got, ref) -> None:
    for key in ("selectivity", "consistency", "importance", "score"):
        a, b = getattr(got.scores, key), getattr(ref.scores, key)
        torch.testing.assert_close(a.double(), b.double(), atol=TOL, rtol=0, equal_nan=True, msg=key)
    assert [(c["layer"], c["index"]) for c in got.candidates(3)] == [(c["layer"], c["index"]) for c in ref.candidates(3)]
    assert got.concept.positive == ref.concept.positive and got.concept.negative == ref.concept.negative


def _same_verdicts(got, ref) -> None:
    assert set(got.ablation) == set(ref.ablation) and {(1, 3), (0, 5)} <= set(ref.ablation)
    for key, r in ref.ablation.items():
        g = got.ablation[key]
        for f in ("tested_as", "verdict", "validated", "causal"):
            assert g[f] == r[f], (key, f)
        for f in ("delta", "delta_control", "p_value", "p_holm"):
            assert (g[f] is None) == (r[f] is None) and (r[f] is None or abs(g[f] - r[f]) <= 1e-5 + 1e-4 * abs(r[f])), \
                (key, f, g[f], r[f])
    for f in ("n_validated", "n_tested", "n_concept_inputs", "n_control_inputs", "method", "split"):
        assert got.ablation_summary[f] == ref.ablation_summary[f], f
    assert got.settings["split"] == ref.settings["split"] and got.settings["seed"] == 3


def test_scan_records_the_settings(setup):
    ref = setup["ref"]
    assert ref.settings["seed"] == 3 and ref.settings["holdout"] == 0.5 and ref.settings["ablation"] == "interchange"
    assert "held-out split" in ref.settings["split"] and ref.top_k == 3
    # a keyword that differs from its default overrides the settings object; the rest is the object's
    other = nl.scan(str(setup["dir"]), small_probe_dict(), device="cpu", settings=SETTINGS, seed=4, ablate=False,
                    neurons=None, importance=False)
    assert other.settings["seed"] == 4 and other.top_k == 3


def test_eval_from_the_same_settings(setup, tmp_path):
    from neurolens_lightning.config import EvalConfig, load_config
    from neurolens_lightning.training.eval import run_eval

    cfg = load_config(EvalConfig, updates={**SETTINGS.to_dict(), "model": str(setup["dir"]), "out": str(tmp_path / "e"),
                                           "trainer": {"accelerator": "cpu", "devices": 1}, "report": False})
    cfg.concept = str(_probe_file(tmp_path))
    got = run_eval(cfg)["result"]
    _same_scores(got, setup["ref"])
    _same_verdicts(got, setup["ref"])


def test_callback_from_the_same_settings(setup):
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from neurolens_lightning.training.callback import NeuroLensCallback
    from neurolens_lightning.training.finetune import CausalLM

    from helpers import TokenSequences
    from transformers import GPT2LMHeadModel

    tok = setup["tok"]
    module = CausalLM(GPT2LMHeadModel.from_pretrained(setup["dir"]), tokenizer=tok, lr=0.0)
    cb = NeuroLensCallback(small_probe_dict(), settings=SETTINGS, every_n_train_steps=1000, probe_at_end=False,
                           top_k=3, log_charts=False)
    data = TokenSequences(tok, 4, 8)
    trainer = pl.Trainer(accelerator="cpu", devices=1, max_steps=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=[cb])
    trainer.fit(module, DataLoader(data, batch_size=2))
    got = cb.last_results[small_probe_dict()["name"]]
    assert cb.history[0]["reason"] == "start"
    _same_scores(got, setup["ref"])
    _same_verdicts(got, setup["ref"])


def test_compare_from_the_same_settings(setup):
    from neurolens_lightning.compare import ModelSpec, compare

    d = str(setup["dir"])
    comp = compare([ModelSpec("a", d), ModelSpec("b", d)], small_probe_dict(), settings=SETTINGS, device="cpu")
    ref = setup["ref"]
    for m in comp["models"]:
        assert m["n_validated"] == ref.ablation_summary["n_validated"]
        assert m["n_significant"] == ref.n_significant_fdr
    assert comp["settings"]["seed"] == 3 and comp["settings"]["holdout"] == 0.5


def test_steer_from_the_same_settings(setup):
    from neurolens_lightning.steering import dose_response

    ref = setup["ref"]
    neurons = [(1, 3), (0, 5)]
    res = dose_response(str(setup["dir"]), small_probe_dict(), neurons, scales=[0, 2], settings=SETTINGS,
                        inputs="heldout", null_sets=19, n_examples=1, device="cpu").to_dict()
    held = load_concept(small_probe_dict()).split(0.5, seed=3)[1]
    assert res["seed"] == 3 and res["holdout"] == 0.5
    assert res["concept_inputs"]["n"] == len(held.tasks or held.positive)
    assert "seed 3, holdout 0.5" in res["split"]
    rank_sizes = f"{len(ref.concept.positive)} + {len(ref.concept.negative)}"
    assert rank_sizes in res["split"]  # the probe head / means come from scan's ranking split


def _probe_file(tmp_path):
    import json

    p = tmp_path / "probe.json"
    p.write_text(json.dumps(small_probe_dict()))
    return p
