"""Progress displays (issue 20 item 3): one helper (``neurolens_lightning.progress``) for every long step.

What can fail:

* a bar stops at a fraction (a loop that ends before its announced total, a null round over fewer chunks than
  its bar counted): a recording double of the bar class asserts ``n == total`` at close for every bar, and the
  real tqdm output on stderr is parsed: every bar's last state is ``k/k``;
* the ablation's null rounds come unannounced: the note before the first round states the bound (at most R more
  rounds), every null round's bar says "null round r of at most R+1", and the rounds run equal the result's;
* the ablation's first bar counts something else than it does (its ETA then lies): its announced total equals
  its final count;
* steer / cross-concept / eval print nothing; progress leaks into library calls (off by default), into stdout,
  or onto ranks other than 0;
* ``neurolens scan --also`` never prints which candidates serve other concepts too.

Tiny planted GPT-2 (helpers.planted_gpt2) and a tiny random BERT saved to a folder (eval).
"""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest
import torch
from helpers import CONCEPT, NEGATIVE, PLANTED, TEMPLATES, make_word_tokenizer, planted_gpt2, planted_probe

import neurolens_lightning as nl
from neurolens_lightning import progress
from neurolens_lightning.cli import main

pytestmark = pytest.mark.usefixtures("one_thread")


class RecordingBar:
    """A stand-in for tqdm that records what a bar was told: its first total, every update, its close."""

    made: list["RecordingBar"] = []

    def __init__(self, total: int, desc: str, **_: object) -> None:
        self.total, self.first_total, self.desc, self.n = total, total, desc, 0
        self.closed_at: tuple[int, int] | None = None
        RecordingBar.made.append(self)

    def update(self, n: int = 1) -> None:
        assert self.closed_at is None, f"{self.desc}: updated after close"
        self.n += n

    def set_postfix_str(self, *_: object, **__: object) -> None:
        pass

    def refresh(self) -> None:
        pass

    def close(self) -> None:
        self.closed_at = (self.n, self.total)


@pytest.fixture
def recorded(monkeypatch):
    """Every bar made and every note written while the test runs (the real ones print nothing then)."""
    RecordingBar.made = []
    notes: list[str] = []
    monkeypatch.setattr(progress, "BAR_FACTORY", RecordingBar)
    monkeypatch.setattr(progress, "NOTE_WRITER", notes.append)
    for key in ("RANK", "LOCAL_RANK"):
        monkeypatch.delenv(key, raising=False)
    return RecordingBar.made, notes


def assert_every_bar_full(bars: list[RecordingBar]) -> None:
    assert bars, "no bar was drawn"
    for b in bars:
        assert b.closed_at is not None, f"bar {b.desc!r} never closed"
        assert b.closed_at[0] == b.closed_at[1], f"bar {b.desc!r} closed at {b.closed_at[0]}/{b.closed_at[1]}"


def final_states(stderr: str) -> dict[str, tuple[int, int]]:
    """The last ``n/total`` tqdm printed for each bar description in ``stderr``."""
    out = {}
    for line in re.split(r"[\r\n]+", stderr):
        m = re.match(r"^(.*?):\s+\d+%\|.*?\|\s*(\d+)/(\d+) ", line)
        if m:
            out[m.group(1)] = (int(m.group(2)), int(m.group(3)))
    return out


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer("gpt2", CONCEPT + NEGATIVE + ["throne", "seat", "bowed"])


def _ablate(tok, **kw):
    # a small first null (4 per layer) and batch 4: the adaptive null needs several more rounds
    return nl.scan(model=planted_gpt2(tok), tokenizer=tok, concept=planted_probe("gpt2"), top_k=2, ablate=True,
                   null_samples=4, batch_size=4, **kw)


# ----------------------------------------------------------------------------- the helper's rule


def test_a_bar_that_ends_early_closes_at_its_count(recorded):
    bars, _ = recorded
    with progress.progress_bar(6, "round", enabled=True) as bar:
        for _ in range(3):
            bar.update()
    assert bars[0].closed_at == (3, 3) and (bar.n, bar.total) == (3, 3)
    for i in progress.track(range(6), 6, "track", enabled=True):
        if i == 2:
            break  # the consumer stops early (items 0 and 1 done): a normal end too
    assert bars[1].closed_at == (2, 2)
    with pytest.raises(RuntimeError):  # a loop that raises is left where it stopped (truthful)
        with progress.progress_bar(6, "raises", enabled=True) as bar:
            bar.update(2)
            raise RuntimeError("boom")
    assert bars[2].closed_at == (2, 6)


def test_real_bar_on_stderr_ends_at_its_count(monkeypatch, capsys):
    monkeypatch.delenv("RANK", raising=False)
    with progress.progress_bar(6, "null round 2 of at most 3", enabled=True) as bar:
        bar.update(3)
    err = capsys.readouterr()
    assert err.out == ""  # stdout keeps the summary
    assert final_states(err.err) == {"null round 2 of at most 3": (3, 3)}


def test_progress_is_off_by_default_and_off_on_other_ranks(tok, recorded, monkeypatch, capsys):
    bars, notes = recorded
    _ablate(tok)                       # a library call: nothing drawn
    assert bars == [] and notes == []
    monkeypatch.setenv("RANK", "1")    # a rank other than 0 under a launcher: nothing drawn either
    _ablate(tok, progress=True)
    assert bars == [] and notes == []
    assert capsys.readouterr().err == ""


# ----------------------------------------------------------------------------- ablation


def test_ablation_announces_its_null_rounds_and_every_bar_ends_full(tok, recorded):
    bars, notes = recorded
    result = _ablate(tok, progress=True)
    assert_every_bar_full(bars)
    rounds = result.ablation_summary["null_rounds"]
    assert rounds >= 3  # the construction: several null rounds follow the first
    first = [b for b in bars if b.desc.startswith("ablation round 1")]
    null = [b for b in bars if b.desc.startswith("null round")]
    assert len(first) == 1 and len(null) == rounds - 1
    assert first[0].first_total == first[0].n  # it counted what it announced: its ETA was about the real work
    assert all(b.first_total == b.n for b in null)
    # announced up front (before the first bar) with the bound that every round then respects
    (msg,) = [n for n in notes if n.startswith("ablation:")]
    most = int(re.search(r"up to (\d+) more null rounds", msg).group(1))
    assert rounds - 1 <= most
    for r, b in enumerate(null, start=2):
        assert b.desc.startswith(f"null round {r} of at most {most + 1} [")


def test_null_rounds_bound_matches_the_plan():
    from neurolens_lightning.ablation import AblationJob, AblationPlan

    plan = AblationPlan([AblationJob([(0, 0)], "candidate", 0)], [(0, 0)], "zero", 0, {0: list(range(1, 500))},
                        {0: 5}, 40, 10, {0: 0})
    bound = plan.null_bound()
    delta, rounds, jobs = [10.0] + [0.0] * 5, 0, 0
    plan.jobs += [AblationJob([(0, u)], "null", 0) for u in range(1, 6)]
    while new := plan.more_null(delta):   # the tested neuron beats every null: the null grows to its cap
        rounds, jobs = rounds + 1, jobs + len(new)
        delta = delta + [0.0] * len(new)
    assert bound == (rounds, jobs) == (3, 35)


# ----------------------------------------------------------------------------- steer


def test_steer_shows_progress_and_announces_its_null(tok, recorded):
    from neurolens_lightning.steering import dose_response

    bars, notes = recorded
    res = dose_response(planted_gpt2(tok), planted_probe("gpt2"), [(0, PLANTED)], tokenizer=tok, progress=True,
                        null_sets=60, batch_size=4, n_examples=2, max_new_tokens=2)
    assert_every_bar_full(bars)
    descs = [b.desc for b in bars]
    assert any(d.startswith("activations [") for d in descs)
    assert any(d.startswith("steering [1 neuron x 5 scales]") for d in descs)
    assert any(d.startswith("before/after outputs") for d in descs)
    null = [d for d in descs if d.startswith("null round")]
    assert null and all(re.match(rf"null round {r} of at most 3 \[", d) for r, d in enumerate(null, start=1))
    assert res.to_dict()["test"]["null_n"] <= 60
    assert any("at most 3 rounds and 60 sets" in n for n in notes)


def test_steer_cli_prints_progress_on_stderr(tok, tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    model = tmp_path / "planted"
    planted_gpt2(tok).save_pretrained(model)
    tok.save_pretrained(model)
    probe = tmp_path / "planted.json"
    probe.write_text(json.dumps(planted_probe("gpt2")))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["steer", "--model", str(model), "--concept", str(probe), "--neurons", f"0:{PLANTED}",
                   "--null-sets", "40", "--examples", "1", "--tokens", "1", "--device", "cpu",
                   "--out", str(tmp_path / "steer")])
    assert rc == 0, err.getvalue()
    states = final_states(err.getvalue())
    assert "steering [1 neuron x 5 scales]" in states and any(d.startswith("null round 1 of at most") for d in states)
    assert all(n == t for n, t in states.values()), states
    assert "verdict:" in out.getvalue() and "%|" not in out.getvalue()


# ----------------------------------------------------------------------------- cross-concept, the scan summary


def _probe(name, pos_words, neg_words):
    return {"name": name, "modality": "text",
            "groups": {w: [t.format(w=w) for t in TEMPLATES] * 2 for w in pos_words},
            "negative": [t.format(w=w) for w in neg_words for t in TEMPLATES] * 2}


def test_scan_also_shows_a_cross_concept_bar_and_prints_the_shared_neurons(tok, tmp_path, monkeypatch):
    monkeypatch.delenv("RANK", raising=False)
    model = tmp_path / "planted"
    planted_gpt2(tok).save_pretrained(model)
    tok.save_pretrained(model)
    files = []
    for probe in (planted_probe("gpt2"), _probe("queen_emperor", ["queen", "emperor"], ["sailor", "soldier"]),
                  _probe("sailor", ["sailor"], ["soldier"])):
        files.append(tmp_path / f"{probe['name']}.json")
        files[-1].write_text(json.dumps(probe))
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(["scan", "--model", str(model), "--concept", str(files[0]), "--also", str(files[1]), str(files[2]),
                   "--top-k", "3", "--no-importance", "--device", "cpu", "--out", str(tmp_path / "scan"),
                   "report=false"])
    assert rc == 0, err.getvalue()
    data = json.loads((tmp_path / "scan" / "results.json").read_text())
    cc = data["cross_concept"]
    states = final_states(err.getvalue())
    n_examples = sum(p + q for p, q in cc["n_examples"])  # the bar counts every probe's examples
    desc = f"cross-concept [{len(cc['neurons'])} neurons x {len(cc['concepts'])} concepts]"
    assert states.get(desc) == (n_examples, n_examples), states
    assert all(n == t for n, t in states.values()), states
    text = out.getvalue()
    assert cc["concepts"][0] == "planted_royalty" and cc["concepts"][-2:] == ["queen_emperor", "sailor"]
    shared = {f"{s['layer']}:{s['index']}": s["selective_for"] for s in cc["shared"]}
    assert {"planted_royalty", "queen_emperor"} <= set(shared.get(f"0:{PLANTED}", []))  # the construction
    assert "sailor" not in shared[f"0:{PLANTED}"]
    assert f"cross-concept ({len(cc['concepts'])} concepts: {', '.join(cc['concepts'])};" in text
    assert f"{len(shared)} of {len(cc['neurons'])} neurons are selective for more than one concept" in text
    for n, hits in shared.items():
        assert re.search(rf"\b{n}\s+selective for {', '.join(hits)}\n", text)


def test_scan_summary_says_when_no_neuron_is_shared(tmp_path, capsys):
    from neurolens_lightning.cli.scan import _print_summary

    result = _ablate(make_word_tokenizer("gpt2", CONCEPT + NEGATIVE + ["throne", "seat", "bowed"]))
    result.extra["cross_concept"] = {"concepts": ["planted_royalty", "sailor"], "neurons": [{"layer": 0, "index": 7}],
                                     "shared": [], "q_threshold": 0.025, "own_concept": "planted_royalty",
                                     "own_row_is_selection_data": True}
    _print_summary(result, tmp_path)
    text = capsys.readouterr().out
    assert "none of the 1 neurons is selective for more than one of these concepts" in text
    assert "the planted_royalty row is scored on the examples that selected the neurons" in text


# ----------------------------------------------------------------------------- eval


def test_eval_shows_progress_for_both_validates_and_the_null_rounds(tmp_path, recorded):
    from helpers import tiny_bert

    from neurolens_lightning.config import EvalConfig, load_config
    from neurolens_lightning.training.eval import run_eval

    bars, notes = recorded
    btok = make_word_tokenizer("bert")
    d = tmp_path / "tiny-bert"
    tiny_bert(btok, n_layer=2).save_pretrained(d)
    btok.save_pretrained(d)
    cfg = load_config(EvalConfig, overrides=[f"model={d}", "concept=negation", "ablate=true", "top_k=2",
                                             "null_samples=4", "batch_size=8", "trainer.accelerator=cpu",
                                             "trainer.devices=1", "report=false", f"out={tmp_path / 'eval'}"])
    info = run_eval(cfg, progress=True)
    assert_every_bar_full(bars)
    descs = [b.desc for b in bars]
    assert descs[0].startswith("scoring [negation")
    assert any(d_.startswith("ablation round 1 [") for d_ in descs)
    null = [d_ for d_ in descs if d_.startswith("null round")]
    assert len(null) == info["result"].ablation_summary["null_rounds"] - 1
    assert any(n.startswith("ablation:") for n in notes)
    torch.set_num_threads(1)  # Lightning may have changed it


def test_eval_without_progress_draws_nothing(tmp_path, recorded):
    from neurolens_lightning.training.eval import _build_trainer, ValidationProgress
    from neurolens_lightning.config import EvalConfig

    cfg = EvalConfig()
    assert not any(isinstance(c, ValidationProgress) for c in _build_trainer(cfg, False, tmp_path).callbacks)
    assert any(isinstance(c, ValidationProgress) for c in _build_trainer(cfg, False, tmp_path, True).callbacks)
    assert recorded[0] == []
