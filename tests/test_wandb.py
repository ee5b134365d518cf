"""W&B logging of a scan: offline run written to tmp_path and read back from disk.

The offline run directory is read directly: ``files/media/html/**.html`` (charts and the
page), ``files/media/table/**.table.json`` (candidate table) and the ``run-*.wandb``
transaction log (a LevelDB-style log of ``wandb_internal_pb2.Record`` protobufs; W&B 0.31
ships no reader for it, so :func:`wandb_records` parses it), which holds the history row
and the ``neurolens-report`` artifact with its manifest.
"""

from __future__ import annotations

import json
import os
import struct
from pathlib import Path
from types import SimpleNamespace

import pytest

wandb = pytest.importorskip("wandb")

from neurolens_lightning.report import log_scan_to_wandb, wandb_run_for  # noqa: E402
from neurolens_lightning.report import wandb_logging  # noqa: E402
from synthetic import synthetic_results  # noqa: E402


def wandb_records(path: Path):
    """Yield the protobuf records of a ``.wandb`` transaction log."""
    from wandb.proto import wandb_internal_pb2 as pb

    data = path.read_bytes()
    assert data[:4] == b":W&B", "not a W&B transaction log"
    pos, block, buf = 7, 32768, b""
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:  # block trailer
            pos += left
            continue
        _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        if length == 0 and kind == 0:
            pos += left
            continue
        chunk = data[pos + 7:pos + 7 + length]
        pos += 7 + length
        if kind == 1:
            buf = chunk
        elif kind == 2:
            buf = chunk
            continue
        else:
            buf += chunk
            if kind == 3:
                continue
        rec = pb.Record()
        rec.ParseFromString(buf)
        buf = b""
        yield rec


@pytest.fixture(scope="module")
def minilm_scan(tmp_path_factory):
    """A real small scan (MiniLM, royalty, layers 4-5), saved with its report."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    import neurolens_lightning as nl

    try:
        result = nl.scan(model="minilm", concept="royalty", layers=[4, 5])
    except nl.ModelLoadError as err:  # pragma: no cover - depends on the local model cache
        pytest.skip(f"MiniLM is not available offline: {err}")
    out = result.save(tmp_path_factory.mktemp("scan") / "minilm-royalty")
    return out, json.loads((out / "results.json").read_text())


@pytest.fixture
def offline_env(monkeypatch, tmp_path):
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    wandb.teardown()  # forget settings cached by an earlier run in this process (e.g. another WANDB_DIR)
    yield tmp_path
    if wandb.run is not None:
        wandb.run.finish()
    wandb.teardown()


def test_scan_logged_offline_and_read_back(minilm_scan, offline_env, capsys):
    out, data = minilm_scan
    run = wandb_run_for({"enabled": True, "project": "neurolens-test"})
    assert run is not None
    printed = capsys.readouterr().out
    assert "offline" in printed and "offline-run-" in printed
    logged = log_scan_to_wandb(data, report_path=out / "report.html", run=run, step=7)
    run.finish()

    run_dir = next((offline_env / "wandb").glob("offline-run-*"))
    assert str(run_dir) in printed
    # charts and the page as HTML media
    html = {p.name.split("_")[0]: p for p in (run_dir / "files" / "media" / "html").rglob("*.html")}
    assert {"layers", "heatmap", "scatter", "sankey", "report"} <= set(html), sorted(html)
    for name in ("layers", "heatmap", "scatter", "sankey"):
        text = html[name].read_text(encoding="utf-8")
        assert f'id="nl-{name}"' in text and "Plotly.newPlot" in text
        assert "wandb" not in text.split("<body")[0].lower(), "inject=False: no hosted stylesheet"
    page = html["report"].read_text(encoding="utf-8")
    assert page == (out / "report.html").read_text(encoding="utf-8")
    # the candidate table
    tables = list((run_dir / "files" / "media").glob("table*/**/*.table.json"))
    assert len(tables) == 1
    table = json.loads(tables[0].read_text())
    assert table["columns"][:4] == ["rank", "layer", "index", "selectivity"]
    assert len(table["data"]) == data["top_k"]
    first = data["neurons"][0]
    assert table["data"][0][:4] == [1, first["layer"], first["index"], first["selectivity"]]
    # history row and artifact from the transaction log
    records = list(wandb_records(next(run_dir.glob("run-*.wandb"))))
    history = [r.history for r in records if r.WhichOneof("record_type") == "history"]
    assert history, "no history row written"
    items = {(i.key or "/".join(i.nested_key)): i.value_json for h in history for i in h.item}
    assert json.loads(items["trainer/global_step"]) == 7
    assert json.loads(items["neurolens/n_significant_fdr"]) == data["n_significant_fdr"]
    arts = [r.artifact for r in records if r.WhichOneof("record_type") == "artifact"
            and r.artifact.type == "neurolens-report"]
    assert len(arts) == 1
    assert arts[0].name == "neurolens-minilm-royalty"
    assert {e.path for e in arts[0].manifest.contents} == {"report.html", "results.json"}
    assert set(logged) >= {"neurolens/candidates", "neurolens/report", "trainer/global_step"}


class FakeRun:
    """Records what a run receives (unit test without a W&B run)."""

    def __init__(self):
        self.logged, self.artifacts, self.metrics = [], [], []

    def log(self, data, **kwargs):
        assert "step" not in kwargs, "the x axis is trainer/global_step, never step="
        self.logged.append(data)

    def log_artifact(self, art):
        self.artifacts.append(art)

    def define_metric(self, name, **kwargs):
        self.metrics.append((name, kwargs))


def test_log_with_ablation_and_emergence_fake_run(tmp_path):
    data = synthetic_results(n_layers=3, units=512, ablation=True, emergence=True, model="m/x", concept="a b")
    run = FakeRun()
    logged = log_scan_to_wandb(data, run=SimpleNamespace(experiment=run), step=3, prefix="nl")
    assert run.logged == [logged]
    assert {"nl/ablation", "nl/emergence", "nl/report", "nl/candidates"} <= set(logged)
    assert logged["trainer/global_step"] == 3 and logged["nl/n_validated"] == data["ablation_summary"]["n_validated"]
    assert all(isinstance(logged[f"nl/{k}"], wandb.Html) for k in ("layers", "heatmap", "scatter", "ablation"))
    assert ("nl/*", {"step_metric": "trainer/global_step"}) in run.metrics
    (art,) = run.artifacts
    assert art.type == "neurolens-report" and art.name == "nl-m_x-a_b"
    assert set(art.manifest.entries) == {"report.html", "results.json"}
    rows = logged["nl/candidates"].data
    assert [r[13] for r in rows] == [wandb_logging.figures.candidate_status(n, data) for n in data["neurons"][:10]]
    # the causal test's one vocabulary: the verdict, and beside it whether the neuron is causal
    cols = wandb_logging.CANDIDATE_COLUMNS
    assert cols[cols.index("ablation_verdict") + 1] == "ablation_causal" and cols[13] == "status"
    summ = data["ablation_summary"]
    for key in ("n_causal", "n_causal_not_candidate", "n_not_causal", "joint_p_null"):
        assert logged[f"nl/{key}"] == summ[key]
    recs = {(n["layer"], n["index"]): n["ablation"] for n in data["neurons"] if n["ablation"]}
    tested = [r for r in rows if (r[1], r[2]) in recs]
    assert tested and {r[cols.index("ablation_causal")] for r in tested} == {True, False}
    for r in tested:
        a = recs[(r[1], r[2])]
        assert r[cols.index("ablation_verdict")] == a["verdict"] == r[13]
        assert r[cols.index("ablation_causal")] is a["causal"]
    supp_rows = wandb_logging.candidate_rows(data, role="suppressor")
    words = {r[13] for r in rows + supp_rows} | {r[cols.index("ablation_verdict")] for r in rows + supp_rows}
    assert words <= set(wandb_logging.figures.VERDICTS) | {"not ablated", None} and "not validated" not in words


def test_no_step_no_artifact(tmp_path):
    run = FakeRun()
    logged = log_scan_to_wandb(synthetic_results(n_layers=2, units=32), run=run, artifact=False, log_page=False)
    assert "trainer/global_step" not in logged and not run.artifacts and "neurolens/report" not in logged


def test_wandb_run_for_not_requested(monkeypatch):
    from neurolens_lightning.config import WandbConfig

    assert wandb_run_for(None) is None
    assert wandb_run_for(False) is None
    assert wandb_run_for({"enabled": False}) is None
    assert wandb_run_for(WandbConfig()) is None  # disabled by default
    assert wandb_run_for(SimpleNamespace(wandb=WandbConfig(enabled=False))) is None
    assert wandb_run_for({"enabled": True, "mode": "disabled"}) is None


def test_wandb_run_for_defaults_to_offline_without_key(monkeypatch, tmp_path, capsys):
    from neurolens_lightning.config import WandbConfig

    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("WANDB_DIR", str(tmp_path))
    monkeypatch.setenv("WANDB_SILENT", "true")
    monkeypatch.setattr(wandb_logging, "_api_key_configured", lambda: False)
    run = wandb_run_for(SimpleNamespace(wandb=WandbConfig(enabled=True, project="p")))
    try:
        assert run.settings.mode == "offline" or run.offline
        assert "written offline to" in capsys.readouterr().out
    finally:
        run.finish()


def test_log_without_run_fails_clearly(monkeypatch):
    monkeypatch.setattr(wandb, "run", None)
    with pytest.raises(RuntimeError, match="no active W&B run"):
        log_scan_to_wandb(synthetic_results(n_layers=1, units=16))
