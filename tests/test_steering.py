"""Steering (DESIGN §7): dose-response on planted neurons, hygiene of ``steer``, the page, ``--from``.

The planted tiny GPT-2 of ``helpers.planted_gpt2`` (see test_ground_truth.py) has PLANTED (layer 0,
unit 7), which writes the " throne" direction when a concept word is present, so scaling it up
raises log p(" throne") on the concept tasks; MUTE (unit 13) reads exactly like PLANTED but writes
nothing, so scaling it can change nothing.
"""

from __future__ import annotations

import html
import json
import re

import pytest
import torch
from helpers import CONCEPT, NEGATIVE, PLANTED, make_word_tokenizer, planted_gpt2, planted_probe
from test_report import console_errors, needs_chromium, render, strip_scripts

from neurolens_lightning.adapters import adapter_for
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.hooks import count_hooks
from neurolens_lightning.steering import dose_response, monotonic_test, neurons_from_results, steer

MUTE = 13
pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer("gpt2", CONCEPT + NEGATIVE + ["throne", "seat", "bowed"])


@pytest.fixture(scope="module")
def model(tok):
    return planted_gpt2(tok, mute=MUTE)


@pytest.fixture(scope="module")
def doses(model, tok):
    return {n: dose_response(model, planted_probe("gpt2"), [(0, n)], tokenizer=tok, n_boot=200).to_dict()
            for n in (PLANTED, MUTE)}


def _logits(model, tok):
    ids = tok(["the seat of the king", "a farmer sat"], padding=True, return_tensors="pt")
    with torch.no_grad():
        return model(**ids).logits


def test_causal_neuron_moves_y_monotonically_mute_stays_flat(doses):
    causal, mute = doses[PLANTED], doses[MUTE]
    assert causal["scales"] == [0.0, 0.5, 1.0, 2.0, 4.0]
    y = causal["concept_inputs"]["mean_y"]
    assert y[0] < y[2] < y[4], y                                   # 0 < 1 < 4
    assert all(a < b for a, b in zip(y, y[1:])), y                 # strictly increasing at every step
    assert y[4] - y[0] > 10                                        # tens of nats: " throne" written or not
    assert causal["test"]["direction"] == "increasing" and causal["test"]["monotonic"] is True
    assert causal["test"]["p_trend"] < 1e-3
    ctl = causal["control_inputs"]["mean_y"]
    assert max(ctl) - min(ctl) < 0.1 * (y[4] - y[0])               # controls move far less ...
    assert causal["test"]["p_specific"] < 0.05                     # ... and the slopes differ
    for kind in ("concept_inputs", "control_inputs"):
        m = mute[kind]["mean_y"]
        assert max(m) - min(m) < 1e-4, (kind, m)
    assert mute["test"]["monotonic"] is False
    # the CI bands bracket the means
    blk = causal["concept_inputs"]
    assert all(lo <= m <= hi for lo, m, hi in zip(blk["ci_low"], blk["mean_y"], blk["ci_high"]))


def test_generated_text_changes_with_the_scale(doses):
    ex = doses[PLANTED]["examples"][0]
    by_label = {o["label"]: o for o in ex["outputs"]}
    off, on = by_label["×0"], by_label["×4"]
    assert off["continuation"] != on["continuation"], ex
    assert "throne" in on["continuation"] and "throne" not in off["continuation"]
    assert on["target_logprob"] > off["target_logprob"]
    assert [t["token"] for t in on["top_next"]][0].strip() == "throne"
    mute_ex = doses[MUTE]["examples"][0]
    assert len({o["continuation"] for o in mute_ex["outputs"]}) == 1  # nothing changes


def test_steer_is_clean_even_when_the_body_raises(model, tok):
    before = _logits(model, tok)
    n0 = count_hooks(model)
    with steer(model, [(0, PLANTED)], scale=4.0) as m:
        assert m is model and count_hooks(model) == n0 + 1
        steered = _logits(model, tok)
    assert not torch.equal(steered, before)
    assert torch.equal(_logits(model, tok), before) and count_hooks(model) == n0
    with pytest.raises(RuntimeError, match="boom"):
        with steer(model, [(0, PLANTED), (1, 3)], value=0.5):
            _logits(model, tok)
            raise RuntimeError("boom")
    assert torch.equal(_logits(model, tok), before) and count_hooks(model) == n0


def test_steer_scale_and_value_by_hand(model, tok):
    adapter = adapter_for(model, tok)
    site = adapter.sites[0].module

    def acts():
        """The site's output as the rest of the network sees it (a hook registered after steer's)."""
        seen = {}
        h = site.register_forward_hook(lambda _m, _i, out: seen.__setitem__("a", out.detach().clone()))
        try:
            _logits(model, tok)
        finally:
            h.remove()
        return seen["a"]

    clean = acts()
    others = [u for u in range(clean.shape[-1]) if u != PLANTED]
    with steer(model, [(0, PLANTED)], scale=2.0):
        a = acts()
    assert torch.allclose(a[..., PLANTED], 2 * clean[..., PLANTED]) and not torch.equal(a, clean)
    assert torch.equal(a[..., others], clean[..., others])
    with steer(model, [(0, PLANTED), (0, 3)], value=torch.tensor([1.5, -2.0])):
        a = acts()
    assert (a[..., PLANTED] == 1.5).all() and (a[..., 3] == -2.0).all()


@pytest.mark.parametrize("kwargs, match", [
    (dict(neurons=[(5, 0)], scale=2.0), r"layer 5 out of range"),
    (dict(neurons=[(0, 10 ** 6)], scale=2.0), r"index out of range.*128 units"),
    (dict(neurons=[(0, 1)]), r"exactly one of scale= .* or value="),
    (dict(neurons=[(0, 1)], scale=1.0, value=0.0), r"exactly one of"),
    (dict(neurons=[], scale=1.0), r"at least one neuron"),
    (dict(neurons=[(0, 1), (0, 2)], value=[1.0, 2.0, 3.0]), r"3 entries for 2 neurons"),
])
def test_bad_steering_arguments(model, kwargs, match):
    with pytest.raises(NeuroLensError, match=match):
        with steer(model, **kwargs):
            pass
    assert count_hooks(model) == 0


def test_monotonic_test_by_hand():
    import numpy as np

    scales = [0, 1, 2]
    rising = np.array([[0.0, 0.1, 0.0, 0.2], [1.0, 1.1, 0.9, 1.3], [2.0, 2.5, 1.9, 2.2]])
    t = monotonic_test(rising, np.zeros((3, 4)), scales)
    assert t["direction"] == "increasing" and t["slope_mean"] == pytest.approx(np.mean([1.0, 1.2, 0.95, 1.0]))
    assert t["p_trend"] < 0.05 and t["monotonic"] is True
    flat = np.ones((3, 4))
    assert monotonic_test(flat, None, scales)["monotonic"] is False
    mixed = np.array([[0.0, 2.0, 0.0, 2.0], [1.0, 1.0, 1.0, 1.0], [2.0, 0.0, 2.0, 0.0]])
    assert monotonic_test(mixed, None, scales)["p_trend"] > 0.5


def test_steering_page_and_json(doses, tmp_path):
    from neurolens_lightning.steering import SteeringResult

    out = SteeringResult(doses[PLANTED]).save(tmp_path / "steer")
    data = json.loads((out / "steering.json").read_text())
    assert {"scales", "neurons", "concept_inputs", "control_inputs", "examples", "test"} <= set(data)
    page = (out / "steering.html").read_text()
    assert "monotonic dose-response" in page and html.escape(data["y"]) in page
    for v in data["concept_inputs"]["mean_y"]:
        from neurolens_lightning.report.page import _fmt

        assert _fmt(v) in page  # every mean is on the page, from steering.json
    assert not list(tmp_path.glob(".*tmp*"))


@needs_chromium
def test_steering_page_renders(doses, tmp_path):
    from neurolens_lightning.steering import SteeringResult

    out = SteeringResult(doses[PLANTED]).save(tmp_path / "steer")
    dom, log, _ = render(out / "steering.html")
    assert not console_errors(log), console_errors(log)
    body = strip_scripts(dom)
    assert 'class="main-svg"' in body and re.search(r'class="(?:[^"]* )?js-line[ "]', body)


def test_neurons_from_results(tmp_path):
    rec = lambda l, i, **ab: {"layer": l, "index": i, "role": "candidate", "ablation": ab or None}  # noqa: E731
    data = {"top_k": 2, "neurons": [rec(0, 1, validated=True, direction="drop"), rec(0, 2, validated=False),
                                    rec(1, 3, validated=True, direction="rise"), rec(1, 4)]}
    (tmp_path / "results.json").write_text(json.dumps(data))
    assert neurons_from_results(tmp_path)[0] == [(0, 1)]
    assert neurons_from_results(tmp_path / "results.json", which="candidates")[0] == [(0, 1), (0, 2)]
    data["neurons"] = [rec(0, 2, validated=False)]
    (tmp_path / "results.json").write_text(json.dumps(data))
    with pytest.raises(NeuroLensError, match="validated no neuron"):
        neurons_from_results(tmp_path)
    with pytest.raises(NeuroLensError, match="cannot read a results.json"):
        neurons_from_results(tmp_path / "missing.json")


def test_cli_steer_on_minilm_and_bad_input(tmp_path, capsys):
    from neurolens_lightning.cli import main

    out = tmp_path / "steer"
    rc = main(["steer", "--model", "minilm", "--concept", "royalty", "--neurons", "1:1035", "--scales", "0", "1", "4",
               "--examples", "1", "--out", str(out)])
    assert rc == 0
    data = json.loads((out / "steering.json").read_text())
    assert data["neurons"] == [{"layer": 1, "index": 1035}] and data["scales"] == [0.0, 1.0, 4.0]
    assert data["concept_inputs"]["n"] > 20 and "p_concept" in data["examples"][0]["outputs"][0]
    assert (out / "steering.html").is_file()
    printed = capsys.readouterr().out
    assert "trend:" in printed and str(out / "steering.json") in printed
    bad = tmp_path / "bad"
    assert main(["steer", "--model", "minilm", "--concept", "royalty", "--out", str(bad)]) == 2
    assert main(["steer", "--model", "minilm", "--concept", "royalty", "--neurons", "9:1", "--out", str(bad)]) == 2
    assert "layer 9 out of range" in capsys.readouterr().err
    assert not bad.exists()


def test_callback_steering_check_at_fit_end(tok, tmp_path):
    """``steer_scales``: after the end probe the callback steers the final top candidates and logs the trend."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger
    from torch.utils.data import DataLoader

    from neurolens_lightning import CausalLM, NeuroLensCallback

    model = planted_gpt2(tok, mute=MUTE)
    module = CausalLM(model, tok, lr=0.0)  # lr 0: the planted weights stay as built
    texts = ["the king sat on his throne", "the farmer sat on the bench"] * 4
    loader = DataLoader(texts, batch_size=4, collate_fn=module.collate)
    cb = NeuroLensCallback(planted_probe("gpt2"), every_n_train_steps=100, probe_at_start=False, top_k=3,
                           steer_scales=[0, 1, 4], report_dir=str(tmp_path / "reports"))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    trainer = pl.Trainer(max_steps=2, callbacks=[cb], logger=CSVLogger(tmp_path / "logs"), enable_progress_bar=False,
                         enable_model_summary=False, enable_checkpointing=False, accelerator="cpu")
    trainer.fit(module, loader)
    d = cb.steering["planted_royalty"]
    assert d["source"]["which"] == "top candidates" and {"layer": 0, "index": PLANTED} in d["neurons"]
    y = d["concept_inputs"]["mean_y"]
    assert y[0] < y[1] < y[2] and d["test"]["monotonic"] is True
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items()) and count_hooks(model) == 0
    metrics = (tmp_path / "logs").rglob("metrics.csv")
    header = next(metrics).read_text().splitlines()[0]
    assert "neurolens/planted_royalty/steer_monotonic" in header
    assert (tmp_path / "reports" / "planted_royalty" / "steering" / "steering.html").is_file()
    with pytest.raises(NeuroLensError, match="at least 2 scales"):
        NeuroLensCallback("royalty", steer_scales=[1.0])
