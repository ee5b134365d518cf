"""The results.json schema reader (``schema.read_results``): a real scan's file reads back as written, and every
malformed shape a hand-edited file can have is refused in one line naming the key (``"validated": "false"`` as a
string would otherwise count as validated; a float index would be truncated; a top-level array, a string layer,
``neurons`` as an object or a neuron without ``index`` would be tracebacks later)."""

from __future__ import annotations

import copy
import json

import pytest
from helpers import make_word_tokenizer, small_probe_dict, tiny_gpt2

import neurolens_lightning as nl
from neurolens_lightning.schema import RESULTS_VERSION, SchemaError, neuron_key, read_results

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    tok = make_word_tokenizer("gpt2")
    res = nl.scan(tiny_gpt2(tok), small_probe_dict(), tokenizer=tok, ablate=True, top_k=2, null_samples=8,
                  neurons=[(1, 3)], holdout=0.5)
    out = res.save(tmp_path_factory.mktemp("schema") / "scan", report=False)
    return out, json.loads((out / "results.json").read_text())


def test_a_real_file_reads_back(saved):
    out, data = saved
    assert read_results(out) == data == read_results(out / "results.json")
    assert data["schema_version"] == RESULTS_VERSION
    assert (1, 3) in {neuron_key(n) for n in data["neurons"] if n.get("ablation")}


def _edit(data, fn):
    d = copy.deepcopy(data)
    fn(d)
    return d


def _tested(d):
    return next(n for n in d["neurons"] if n.get("ablation"))


BROKEN = [
    (lambda d: _tested(d)["ablation"].__setitem__("validated", "false"), r"neurons\[\d+\]\.ablation\.validated is 'false'"),
    (lambda d: _tested(d)["ablation"].__setitem__("causal", 1), r"ablation\.causal is 1, not true/false"),
    (lambda d: _tested(d).__setitem__("index", 37.9), r"neurons\[\d+\]\.index is 37\.9, not an integer"),
    (lambda d: d["neurons"][0].__setitem__("layer", "1"), r"neurons\[0\]\.layer is '1'"),
    (lambda d: d["neurons"][0].pop("index"), r"neurons\[0\]\.index is None"),
    (lambda d: d.__setitem__("neurons", {"a": 1}), r"neurons is dict, not a list"),
    (lambda d: d.__setitem__("schema_version", 99), r"schema_version 99"),
    (lambda d: d.__setitem__("settings", []), r"settings is list, not an object"),
    (lambda d: _tested(d)["ablation"].__setitem__("direction", "up"), r"direction is 'up'"),
    (lambda d: d.__setitem__("top_k", 0), r"top_k is 0"),
]


@pytest.mark.parametrize("fn,match", BROKEN)
def test_malformed_files_are_refused_in_one_line(saved, tmp_path, fn, match):
    _, data = saved
    p = tmp_path / "results.json"
    p.write_text(json.dumps(_edit(data, fn)))
    with pytest.raises(SchemaError, match=match) as err:
        read_results(p)
    assert "\n" not in str(err.value) and str(p) in str(err.value)


def test_not_an_object_or_not_json(tmp_path):
    p = tmp_path / "results.json"
    p.write_text("[1, 2]")
    with pytest.raises(SchemaError, match="holds a list, not an object"):
        read_results(p)
    p.write_text("{not json")
    with pytest.raises(SchemaError, match="cannot read a results.json"):
        read_results(tmp_path)


def test_steer_from_a_malformed_file_is_one_line_exit_2(saved, tmp_path, capsys):
    """``neurolens steer --from`` reads through the schema: a string "false" for validated is refused before any
    model is loaded (it used to count as validated and steer never-validated neurons)."""
    from neurolens_lightning.cli import main

    _, data = saved
    bad = _edit(data, lambda d: _tested(d)["ablation"].__setitem__("validated", "false"))
    p = tmp_path / "results.json"
    p.write_text(json.dumps(bad))
    rc = main(["steer", "--from", str(p), "--out", str(tmp_path / "steer")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "validated is 'false'" in err[0], err
    assert not (tmp_path / "steer").exists()
