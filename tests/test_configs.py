"""OmegaConf configs: every file in configs/ validates against its schema; bad keys and bad types
fail with a message naming the key (through load_config and through the CLI, exit code 2); and
``neurolens eval`` runs a Lightning validate with a CSV (default) or W&B logger.
"""

from __future__ import annotations

import csv
import dataclasses
import inspect
import json
import subprocess
import sys
from pathlib import Path

import pytest
from omegaconf.errors import ConfigKeyError, ValidationError

from neurolens_lightning.cli import main
from neurolens_lightning.config import (CONFIG_SCHEMAS, CallbackConfig, CompareConfig, EvalConfig, ScanConfig,
                                        load_config, schema_for_file)
from neurolens_lightning.errors import NeuroLensError

ROOT = Path(__file__).resolve().parents[1]
CONFIG_FILES = sorted((ROOT / "configs").glob("*.yaml"))

#: file -> schema (every file in configs/ must be listed here, so a new file gets a schema)
EXPECTED = {"scan.yaml": ScanConfig, "compare.yaml": CompareConfig, "callback.yaml": CallbackConfig,
            "eval_minilm.yaml": EvalConfig}


def test_every_config_file_has_a_schema():
    names = {p.name for p in CONFIG_FILES}
    assert names >= set(EXPECTED), f"missing config files: {set(EXPECTED) - names}"
    for p in CONFIG_FILES:
        assert schema_for_file(p) is EXPECTED.get(p.name, schema_for_file(p))
    assert set(CONFIG_SCHEMAS.values()) == {ScanConfig, CompareConfig, CallbackConfig, EvalConfig}
    with pytest.raises(NeuroLensError, match="no config schema"):
        schema_for_file("configs/other.yaml")


@pytest.mark.parametrize("path", CONFIG_FILES, ids=lambda p: p.name)
def test_config_file_validates(path):
    import yaml

    schema = schema_for_file(path)
    cfg = load_config(schema, [path])
    assert isinstance(cfg, schema)
    # every key in the file is a field (load_config would have raised) and the file sets them all:
    # the documented YAML is the complete reference of its schema
    raw = yaml.safe_load(path.read_text())
    fields = {f.name for f in dataclasses.fields(schema)}
    assert set(raw) == fields, f"{path.name}: undocumented {fields - set(raw)}"
    for f in dataclasses.fields(schema):
        value = getattr(cfg, f.name)
        if dataclasses.is_dataclass(value):
            assert set(raw[f.name]) == {g.name for g in dataclasses.fields(value)}, f"{path.name}: {f.name}"


def test_config_values():
    cmp = load_config(CompareConfig, [ROOT / "configs/compare.yaml"])
    assert cmp.models == ["minilm", "minilm:random"] and cmp.concept == "negation"
    ev = load_config(EvalConfig, [ROOT / "configs/eval_minilm.yaml"], ["layers=[5]", "logger.kind=wandb"])
    assert ev.layers == [5] and ev.logger.kind == "wandb" and ev.model == "minilm"
    # overrides: later wins; flags (``updates``) win over both
    cfg = load_config(CompareConfig, [ROOT / "configs/compare.yaml"], ["models=[minilm,minilm]", "top_k=3"],
                      {"top_k": 4})
    assert cfg.models == ["minilm", "minilm"] and cfg.top_k == 4


def test_callback_config_matches_the_callback():
    from neurolens_lightning.training.callback import NeuroLensCallback

    params = inspect.signature(NeuroLensCallback.__init__).parameters
    for f in dataclasses.fields(CallbackConfig):
        assert f.name in params, f"CallbackConfig.{f.name} is not a NeuroLensCallback argument"
        default = params[f.name].default
        value = getattr(CallbackConfig(), f.name)
        if f.name == "concepts":
            continue  # the callback accepts one name or a list; the config always holds a list
        assert value == default, f"default of {f.name}: config {value!r} vs callback {default!r}"
    cfg = load_config(CallbackConfig, [ROOT / "configs/callback.yaml"], ["every_n_train_steps=5"])
    cb = NeuroLensCallback(**cfg.kwargs())
    assert cb.every_n_train_steps == 5 and [c.name for c in cb.concepts] == ["royalty"]


@pytest.mark.parametrize("schema, override, key, error", [
    (ScanConfig, "top_kk=3", "top_kk", ConfigKeyError),
    (CompareConfig, "top_k=abc", "top_k", ValidationError),
    (CompareConfig, "weights=randomish", "weights", ValidationError),
    (CompareConfig, "models=3", "models", ValidationError),
    (EvalConfig, "logger.kind=tensorboard", "logger.kind", ValidationError),
    (EvalConfig, "logger.savedir=/tmp", "logger.savedir", ConfigKeyError),
    (EvalConfig, "trainer.enable_progress_bar=maybe", "trainer.enable_progress_bar", ValidationError),
    (CallbackConfig, "every_n_train_steps=often", "every_n_train_steps", ValidationError),
    (CallbackConfig, "layer=[1]", "layer", ConfigKeyError),
])
def test_bad_key_or_type_names_the_key(schema, override, key, error):
    with pytest.raises(error) as exc:
        load_config(schema, overrides=[override])
    assert exc.value.full_key == key
    assert key in str(exc.value)


def test_bad_key_in_a_file_names_the_key(tmp_path):
    bad = tmp_path / "compare.yaml"
    bad.write_text((ROOT / "configs/compare.yaml").read_text() + "\nlogger:\n  kind: csv\n")
    with pytest.raises(ConfigKeyError) as exc:
        load_config(CompareConfig, [bad])
    assert exc.value.full_key == "logger"
    bad.write_text("top_k: many\n")
    with pytest.raises(ValidationError, match="top_k"):
        load_config(CompareConfig, [bad])
    with pytest.raises(NeuroLensError, match="does not exist"):
        load_config(CompareConfig, [tmp_path / "missing.yaml"])
    with pytest.raises(NeuroLensError, match="key=value"):
        load_config(CompareConfig, overrides=["top_k"])


@pytest.mark.parametrize("argv, key", [
    (["compare", "--config", "configs/compare.yaml", "top_kk=3"], "top_kk"),
    (["compare", "--config", "configs/compare.yaml", "grid=fine"], "grid"),
    (["eval", "--config", "configs/eval_minilm.yaml", "logger.kind=tensorboard"], "logger.kind"),
    (["eval", "--config", "configs/eval_minilm.yaml", "trainer.acelerator=cpu"], "trainer.acelerator"),
    (["scan", "--config", "configs/scan.yaml", "top_k=abc"], "top_k"),
])
def test_cli_config_errors_exit_2_naming_the_key(argv, key, capsys, monkeypatch, tmp_path):
    monkeypatch.chdir(ROOT)
    rc = main(argv + [f"out={tmp_path / 'out'}"])
    err = capsys.readouterr().err
    assert rc == 2
    assert err.startswith("neurolens: config error:") and key in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "out").exists()


def test_cli_exit_code_in_a_real_process(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "neurolens_lightning.cli", "compare", "--config",
                           str(ROOT / "configs/compare.yaml"), "modelz=[minilm]"],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert proc.returncode == 2
    assert "modelz" in proc.stderr and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


# ---------------------------------------------------------------------------- neurolens eval
def test_eval_minilm_layer5_writes_csv_metrics(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(ROOT)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    out = tmp_path / "eval"
    rc = main(["eval", "--config", "configs/eval_minilm.yaml", "layers=[5]", f"out={out}", "batch_size=32",
               "trainer.accelerator=cpu", "trainer.devices=1"])
    assert rc == 0, capsys.readouterr().err
    data = json.loads((out / "results.json").read_text())
    assert data["layers"] == [5] and data["model"] == "minilm" and data["concept"] == "royalty"
    assert data["model_info"]["weights"] == "pretrained" and (out / "report.html").is_file()
    metrics = list((out / "logs" / "neurolens-eval").glob("version_*/metrics.csv"))
    assert len(metrics) == 1
    rows = list(csv.DictReader(metrics[0].open()))
    assert rows and float(rows[-1]["neurolens/n_significant_fdr"]) == data["n_significant_fdr"]
    assert {"neurolens/top_selectivity", "neurolens/top_consistency", "neurolens/top_score"} <= set(rows[-1])


def test_eval_bad_input_writes_nothing(tmp_path, capsys):
    out = tmp_path / "eval"
    rc = main(["eval", "--config", str(ROOT / "configs/eval_minilm.yaml"), "layers=[9]", f"out={out}"])
    err = capsys.readouterr().err
    assert rc == 2 and "neurolens: error:" in err and "9" in err
    assert not out.exists()


def test_eval_wandb_logger_offline_without_api_key(tmp_path, monkeypatch):
    from lightning.pytorch.loggers import CSVLogger, WandbLogger

    from neurolens_lightning.training.eval import make_logger
    from neurolens_lightning.report import wandb_logging

    monkeypatch.setenv("WANDB_MODE", "placeholder")  # so monkeypatch restores the variable WandbLogger sets
    monkeypatch.delenv("WANDB_MODE")
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setattr(wandb_logging, "_api_key_configured", lambda: False)
    cfg = load_config(EvalConfig, overrides=["logger.kind=wandb", "logger.project=p"])
    logger = make_logger(cfg, tmp_path / "out")
    assert isinstance(logger, WandbLogger) and logger._offline
    assert logger.save_dir == str(tmp_path / "out" / "logs")
    monkeypatch.setattr(wandb_logging, "_api_key_configured", lambda: True)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    assert not make_logger(cfg, tmp_path / "out2")._offline  # online only with a key
    csv_logger = make_logger(load_config(EvalConfig, overrides=["logger.save_dir=" + str(tmp_path / "l")]), tmp_path)
    assert isinstance(csv_logger, CSVLogger) and csv_logger.save_dir == str(tmp_path / "l")


def test_eval_with_wandb_offline_on_a_tiny_model(tmp_path, monkeypatch, bert_tokenizer):
    """A full eval run logged to an offline W&B run (tiny local model, so it is fast)."""
    pytest.importorskip("wandb")
    from helpers import tiny_bert_encoder

    model_dir = tmp_path / "tiny"
    tiny_bert_encoder(bert_tokenizer, n_layer=2).save_pretrained(model_dir)
    bert_tokenizer.save_pretrained(model_dir)
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_SILENT", "true")
    out = tmp_path / "eval"
    rc = main(["eval", "--config", str(ROOT / "configs/eval_minilm.yaml"), f"model={model_dir}", "concept=negation",
               f"out={out}", "logger.kind=wandb", "trainer.accelerator=cpu", "trainer.devices=1"])
    assert rc == 0
    assert (out / "results.json").is_file()
    runs = list((out / "logs" / "wandb").glob("offline-run-*"))
    assert len(runs) == 1
    html = [p.name for p in runs[0].glob("files/media/html/**/*.html")]
    assert any(n.startswith("report_") for n in html) and any(n.startswith("layers_") for n in html), html
