"""``neurolens eval ablate=true``: the scoring validate on the ranking split, then
``Trainer.validate(AblationModule)`` on the held-out split.

* the Δ / p / verdict of every tested neuron equal ``scan(..., ablate=True)`` with the same model,
  concept, holdout, seed and null (one process): zero ablation on a held-out split (a masked LM,
  y under its own head) and resample ablation with ``holdout=0`` and importance off (a headless
  encoder, y = the probe head's log-odds, fitted for the ablation);
* the CSV logger's ``metrics.csv`` has the ``ablation/...`` columns, results.json the split
  sentences and an ``ablation`` timing, and the CLI prints the verdicts;
* bad ablation input fails (exit 2) before any folder is created;
* ``trainer.devices=2 trainer.accelerator=cpu`` (DDP, two processes started by Lightning's
  subprocess launcher, so the CLI runs in a subprocess) gives the single-process Δ and verdicts.

Tiny random BERT models saved to folders (loaded by path, like a user's local model).
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from neurolens_lightning.cli import main

ROOT = Path(__file__).resolve().parents[1]
CONFIG = str(ROOT / "configs/eval_minilm.yaml")
NAMED = ["1:3", "0:5"]
#: the ablation settings shared by every run here (and by the matching scan() calls); batch_size=4 makes the
#: held-out concept inputs (8 tasks) and control inputs (34) several chunks each, so a rank that saw only some
#: chunks cannot give the single-process Δ by accident
COMMON = ["concept=negation", "ablate=true", "top_k=3", "null_samples=20", "seed=0", "batch_size=4",
          'neurons=["1:3","0:5"]', "trainer.accelerator=cpu"]
TOL = 1e-6
DDP_TIMEOUT_S = 300

pytestmark = pytest.mark.usefixtures("one_thread")


def _save(model, tok, d: Path) -> Path:
    model.save_pretrained(d)
    tok.save_pretrained(d)
    return d


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory):
    """A tiny random BERT masked LM (y = log p of the task target under its own head) and its tokenizer,
    saved to a folder. Its ranking has candidates and suppressors, so they are tested with the named neurons."""
    from helpers import make_word_tokenizer, tiny_bert

    tok = make_word_tokenizer("bert")
    return _save(tiny_bert(tok, n_layer=2), tok, tmp_path_factory.mktemp("tiny") / "tiny-bert-mlm")


@pytest.fixture(scope="module")
def encoder_dir(tmp_path_factory):
    """A tiny random BERT encoder without a head: y is the log-odds of a probe head fitted on the ranking split."""
    from helpers import make_word_tokenizer, tiny_bert_encoder

    tok = make_word_tokenizer("bert")
    return _save(tiny_bert_encoder(tok, n_layer=2), tok, tmp_path_factory.mktemp("tiny") / "tiny-bert-encoder")


def _run_cli(argv: list[str]) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        rc = main(argv)
    return rc, out.getvalue(), err.getvalue()


def _ablation_records(data: dict) -> dict[tuple[int, int], dict]:
    return {(n["layer"], n["index"]): n["ablation"] for n in data["neurons"] if n.get("ablation")}


@pytest.fixture(scope="module")
def single_run(tiny_dir, tmp_path_factory):
    """``neurolens eval ablate=true`` in this process, one device, CSV logger."""
    out = tmp_path_factory.mktemp("eval1") / "eval"
    rc, stdout, stderr = _run_cli(["eval", "--config", CONFIG, f"model={tiny_dir}", *COMMON, "trainer.devices=1",
                                   f"out={out}"])
    assert rc == 0, stderr
    return {"out": out, "stdout": stdout, "data": json.loads((out / "results.json").read_text())}


def _scan(tiny_dir, **kw):
    from neurolens_lightning.api import scan

    return scan(str(tiny_dir), "negation", top_k=3, ablate=True, null_samples=20, seed=0, batch_size=4,
                neurons=[(1, 3), (0, 5)], device="cpu", **kw)


def _close(a: float | None, b: float | None) -> bool:
    """|a - b| <= 1e-6, and (the Δ of tiny random models are ~1e-5 .. 1e-3) within 1e-4 of b's size."""
    if a is None or b is None:
        return a is b
    return abs(a - b) <= min(TOL, 1e-4 * abs(b) + 1e-9)


def _ablation_diffs(got: dict[tuple[int, int], dict], ref: dict[tuple[int, int], dict]) -> dict[str, tuple]:
    """``{"L:I field": (got, ref)}`` for every number or verdict of a tested neuron that differs."""
    bad: dict[str, tuple] = {}
    for (l, i), r in ref.items():
        g = got[(l, i)]
        for f in ("delta", "delta_control", "p_value"):
            if not _close(g[f], r[f]):
                bad[f"{l}:{i} {f}"] = (g[f], r[f])
        for f in ("tested_as", "verdict", "validated"):
            if g[f] != r[f]:
                bad[f"{l}:{i} {f}"] = (g[f], r[f])
    return bad


def _assert_same_ablation(got: dict[tuple[int, int], dict], ref: dict[tuple[int, int], dict]) -> None:
    assert set(got) == set(ref) and len(ref) >= len(NAMED)
    bad = _ablation_diffs(got, ref)
    assert not bad, bad


# ---------------------------------------------------------------------------- (a) the same numbers as scan()
def test_eval_ablation_equals_scan(single_run, tiny_dir):
    data = single_run["data"]
    ref = _scan(tiny_dir, holdout=0.5)
    got = _ablation_records(data)
    _assert_same_ablation(got, ref.ablation)
    assert {(1, 3), (0, 5)} <= set(got)
    assert [(n["layer"], n["index"]) for n in data["neurons"] if n["role"] == "candidate"][:3] == \
        [(c["layer"], c["index"]) for c in ref.candidates(3)]
    summ, rsumm = data["ablation_summary"], ref.ablation_summary
    for k in ("n_validated", "n_suppressors_validated", "n_tested", "n_concept_inputs", "n_control_inputs", "split"):
        assert summ[k] == rsumm[k], k
    assert _close(summ["joint_delta"], rsumm["joint_delta"])
    # the split is stated like scan's, the ablation is timed
    assert data["settings"]["split"] == ref.settings["split"] and "held-out split" in data["settings"]["split"]
    assert data["settings"]["ablate"] is True and data["settings"]["world_size"] == 1
    assert data["n_positive"] == len(ref.concept.positive)  # the ranking split, not the whole probe
    assert {"load_model", "scoring", "ablation", "total"} <= set(data["timings_s"])
    assert (single_run["out"] / "report.html").is_file()


def test_eval_resample_holdout0_probe_head_equals_scan(encoder_dir, tmp_path):
    """A headless encoder with importance off: the probe head (y) is fitted for the ablation, as scan() does."""
    from neurolens_lightning.config import EvalConfig, load_config
    from neurolens_lightning.training.eval import run_eval

    cfg = load_config(EvalConfig, overrides=[f"model={encoder_dir}", *COMMON, "trainer.devices=1", "ablation=resample",
                                             "holdout=0", "importance=false", "report=false",
                                             f"out={tmp_path / 'eval'}"])
    info = run_eval(cfg)
    ref = _scan(encoder_dir, holdout=0, ablation="resample", importance=False)
    res = info["result"]
    _assert_same_ablation(res.ablation, ref.ablation)
    assert res.ablation_summary["split"] == ref.ablation_summary["split"]
    assert "holdout=0" in res.ablation_summary["split"] and "holdout=0" in res.settings["split"]
    assert res.settings["split"] == ref.settings["split"]
    assert res.ablation_summary["n_concept_inputs"] == len(res.concept.positive)  # every example, as scan
    assert info["ablation_metrics"]["ablation/n_validated"] == res.ablation_summary["n_validated"]
    assert "probe" in res.ablation_summary["y"] and (tmp_path / "eval" / "results.json").is_file()


# ---------------------------------------------------------------------------- (b) logged and printed
def test_eval_ablation_metrics_csv_and_output(single_run):
    data, out = single_run["data"], single_run["out"]
    metrics = list((out / "logs" / "neurolens-eval").glob("version_*/metrics.csv"))
    assert len(metrics) == 1
    rows = list(csv.DictReader(metrics[0].open()))
    cols = set(rows[0])
    recs = _ablation_records(data)
    for l, i in recs:
        assert {f"ablation/delta/{l}:{i}", f"ablation/p/{l}:{i}", f"ablation/validated/{l}:{i}"} <= cols
    assert {"ablation/n_validated", "ablation/n_suppressors_validated", "ablation/joint_delta",
            "neurolens/n_significant_fdr"} <= cols
    logged = {k: float(v) for row in rows for k, v in row.items() if k.startswith("ablation/") and v not in ("", None)}
    for (l, i), ab in recs.items():
        assert logged[f"ablation/delta/{l}:{i}"] == pytest.approx(ab["delta"], rel=1e-6, abs=1e-12)  # logged as float32
        assert logged[f"ablation/validated/{l}:{i}"] == float(ab["validated"])
    assert logged["ablation/n_validated"] == data["ablation_summary"]["n_validated"]
    text = single_run["stdout"]
    summ = data["ablation_summary"]
    assert (f"validated {summ['n_validated']} of {summ['n_candidates']} candidates" in text
            and f"({summ['n_tested']} neurons tested" in text)
    for (l, i), ab in list(recs.items())[:3]:
        line = next(t for t in text.splitlines() if t.strip().startswith(f"{l}:{i} "))
        assert f"Δ={ab['delta']:.4g}" in line and f"p={ab['p_value']:.3g}" in line and ab["verdict"].upper() in line
    assert "ablation/delta/" not in text  # per-neuron metrics stay in the log, not on the screen


# ---------------------------------------------------------------------------- (c) bad input: nothing written
@pytest.mark.parametrize("override, match", [
    ("ablation=bogus", "ablation"),                 # schema (Literal): config error
    ("null_samples=1", "null_samples"),
    ('neurons=["1:999"]', "out of range"),
    ('neurons=["7:1"]', "not scanned"),
    ('neurons=["one"]', "LAYER:INDEX"),
    ("neurons=[1:3]", "quoted"),                    # YAML reads 1:3 as the base-60 number 63
    ("holdout=1", "holdout"),
    ("holdout=-0.1", "holdout"),
    ("alpha=0", "alpha"),
])
def test_eval_bad_ablation_input_writes_nothing(override, match, tiny_dir, tmp_path):
    out = tmp_path / "eval"
    argv = ["eval", "--config", CONFIG, f"model={tiny_dir}", "concept=negation", "ablate=true",
            "trainer.accelerator=cpu", "trainer.devices=1", override, f"out={out}"]
    rc, _, err = _run_cli(argv)
    assert rc == 2 and err.startswith("neurolens: ") and match in err, err
    assert len(err.strip().splitlines()) == 1
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_run_eval_checks_the_method_without_the_schema(tmp_path):
    from neurolens_lightning.config import EvalConfig
    from neurolens_lightning.errors import NeuroLensError
    from neurolens_lightning.training.eval import run_eval

    with pytest.raises(NeuroLensError, match="unknown ablation method"):
        run_eval(EvalConfig(ablate=True, ablation="bogus", out=str(tmp_path / "eval")))  # type: ignore[arg-type]
    assert not (tmp_path / "eval").exists()


# ---------------------------------------------------------------------------- (d) DDP == one process
def _run_ddp_eval(tiny_dir: Path, out: Path, cwd: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
           "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "TOKENIZERS_PARALLELISM": "false"}
    for k in ("LOCAL_RANK", "NODE_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT", "GROUP_RANK"):
        env.pop(k, None)
    if Path("/sys/class/net/lo").exists():
        env.setdefault("GLOO_SOCKET_IFNAME", "lo")  # single node: gloo over loopback
    cmd = [sys.executable, "-m", "neurolens_lightning.cli", "eval", "--config", CONFIG, f"model={tiny_dir}", *COMMON,
           "trainer.devices=2", "report=false", f"out={out}"]
    # bytes, decoded without newline translation: text=True would turn each bar redraw's "\r" into a new line
    proc = subprocess.Popen(cmd, cwd=str(cwd), env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            start_new_session=True)
    try:
        raw, _ = proc.communicate(timeout=DDP_TIMEOUT_S)
    except subprocess.TimeoutExpired:  # pragma: no cover - a hang fails instead of blocking the suite
        os.killpg(proc.pid, signal.SIGKILL)  # the launcher and the rank it started
        raw, _ = proc.communicate()
        stdout = raw.decode("utf-8", "replace")
        pytest.fail(f"the 2-process eval still ran after {DDP_TIMEOUT_S} s (killed). Output tail:\n{stdout[-4000:]}")
    return subprocess.CompletedProcess(proc.args, proc.returncode, raw.decode("utf-8", "replace"), "")


def test_eval_ablation_ddp_two_cpu_processes_equals_single(single_run, tiny_dir, tmp_path):
    """Lightning's subprocess launcher re-runs the command for rank 1, hence the CLI in a subprocess."""
    out = tmp_path / "eval-ddp"
    done = _run_ddp_eval(tiny_dir, out, tmp_path)
    assert done.returncode == 0, done.stdout[-4000:]
    data = json.loads((out / "results.json").read_text())
    ref = single_run["data"]
    assert data["settings"]["world_size"] == 2 and ref["settings"]["world_size"] == 1
    # the scoring run gives the single-process ranking, so the same neurons are tested
    roles = lambda d: [(n["layer"], n["index"], n["role"]) for n in d["neurons"] if n["role"]]  # noqa: E731
    assert roles(data) == roles(ref)
    got, want = _ablation_records(data), _ablation_records(ref)
    assert set(got) == set(want) and len(want) > len(NAMED)
    bad = _ablation_diffs(got, want)
    assert not bad, f"DDP (got) vs single process (ref) differ: {bad}"
    for k in ("n_validated", "n_suppressors_validated", "n_tested", "n_concept_inputs", "n_control_inputs"):
        assert data["ablation_summary"][k] == ref["ablation_summary"][k], k
    assert _close(data["ablation_summary"]["joint_delta"], ref["ablation_summary"]["joint_delta"])
    # rank 0 alone writes and reports: one results.json + page, one logger folder, one summary on stdout
    names = {p.name for p in out.iterdir()}
    assert {"logs", "results.json"} <= names <= {"logs", "results.json", "report.html"}, names
    assert len(list(out.rglob("metrics.csv"))) == 1
    assert done.stdout.count("wrote ") == 1, done.stdout[-3000:]
    # progress on stderr from rank 0 only: the ablation's announcement once, each validate's bar closed once, full
    assert done.stdout.count("ablation: round 1 = ") == 1, done.stdout[-3000:]
    closed = [ln.split("\r")[-1] for ln in done.stdout.split("\n")]  # a closed bar's last state ends its line
    for desc in ("scoring [", "ablation round 1 ["):
        assert sum(ln.startswith(desc) and " 100%|" in ln for ln in closed) == 1, done.stdout[-3000:]
