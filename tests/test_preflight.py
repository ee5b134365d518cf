"""Bad input is refused before any work: one line, exit 2, torch never imported, nothing written, well under 2 s.
Small probes finish (a value that cannot be computed is saved as null with a warning); signals end a command in
one line that says what was written."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from neurolens_lightning.catalog import REGISTRY, model_facts
from neurolens_lightning.cli import main
from neurolens_lightning.concepts import load_concept
from neurolens_lightning.errors import ProbeError

RUN = ("import sys; from neurolens_lightning.cli import main; rc = main(sys.argv[1:]); "
       "print('torch imported' if 'torch' in sys.modules else 'torch not imported'); sys.exit(rc)")


def tiny_probe(path: Path, n_pos: int, n_neg: int, groups: bool = False) -> Path:
    people = ["king", "queen", "prince", "emperor", "duchess", "monarch", "princess", "baron"]
    plain = ["farmer", "baker", "clerk", "driver", "nurse", "pilot", "cook", "miner"]
    pos = [f"The {w} spoke at noon." for w in people[:n_pos]]
    doc = {"name": path.stem, "modality": "text", "negative": [f"The {w} spoke at noon." for w in plain[:n_neg]]}
    doc.update({"groups": {f"g{i}": [t] for i, t in enumerate(pos)}} if groups else {"positive": pos})
    path.write_text(json.dumps(doc))
    return path


@pytest.fixture
def bad_inputs(tmp_path):
    (tmp_path / "afile").write_text("x")
    (tmp_path / "dangling").symlink_to(tmp_path / "missing")
    (tmp_path / "thesis").mkdir()
    (tmp_path / "thesis" / "ch1.tex").write_text("mine")
    small = tiny_probe(tmp_path / "small.json", 3, 3)
    return [
        (["scan", "--model", "nosuch", "--concept", "royalty"], "unknown model 'nosuch'"),
        (["scan", "--model", "minilm", "--concept", "nosuch"], "unknown concept 'nosuch'"),
        (["scan", "--model", "minilm", "--concept", "royalty", "--layers", "99"], "out of range for minilm"),
        (["scan", "--model", "minilm", "--concept", "royalty", "--top-k", "-1"], "top_k must be >= 1"),
        (["scan", "--model", "minilm", "--concept", "royalty", "--out", str(tmp_path / "afile")],
         "exists and is not a folder"),
        (["scan", "--model", "minilm", "--concept", "royalty", "--out", str(tmp_path / "dangling")],
         "symbolic link"),
        (["scan", "--model", "minilm", "--concept", "royalty", "--out", str(tmp_path / "thesis")],
         "not a NeuroLens output"),
        (["scan", "--model", "minilm", "--concept", str(small), "--ablate"], "held-out split needs at least 4"),
        (["scan", "--model", "resnet18", "--concept", "royalty"], "is an image model"),
        (["scan", "--model", "smollm2", "--concept", "royalty", "--neurons", "29:1536"], "index out of range"),
        (["compare", "--models", "minilm", "nosuch", "--concept", "negation"], "unknown model 'nosuch'"),
        (["compare", "--models", "minilm", "minilm:random", "--concept", "negation", "--out",
          str(tmp_path / "afile")], "exists and is not a folder"),
        (["steer", "--model", "minilm", "--concept", "royalty", "--neurons", "2:99999"], "index out of range"),
        (["steer", "--model", "minilm", "--concept", "royalty", "--neurons", "7:1"], "out of range for minilm"),
        (["steer", "--model", "minilm", "--concept", "royalty", "--neurons", "2:5", "--out",
          str(tmp_path / "afile")], "exists and is not a folder"),
        (["steer", "--from", str(tmp_path / "none.json")], "cannot read a results.json"),
    ]


def test_bad_input_is_refused_before_any_work(tmp_path, bad_inputs):
    before = sorted(p.name for p in tmp_path.iterdir())
    for argv, message in bad_inputs:
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-c", RUN, *argv], capture_output=True, text=True, cwd=tmp_path)
        took = time.perf_counter() - t
        err = p.stderr.strip()
        assert p.returncode == 2 and message in err and len(err.splitlines()) == 1, (argv, err)
        assert "torch not imported" in p.stdout, (argv, "the refusal came after the heavy imports")
        assert took < 4.0, (argv, took)  # ~0.5 s measured; 4 s leaves room for a loaded CI machine
    assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing written, no reports/ folder


def test_the_catalog_matches_the_loaded_models():
    """The layer and unit counts preflight checks against are those of the real models (built without weights)."""
    from neurolens_lightning.catalog import _layers_in_config, _mlp_units_in_config
    from neurolens_lightning.registry import _random_hf_config, load_model

    for name in ("minilm", "smollm2", "resnet18", "resnet50"):
        weights = "pretrained" if REGISTRY[name].kind in ("package", "gguf") else "random"
        adapter = load_model(name, weights=weights, device="cpu")
        facts = model_facts(name)
        assert facts.n_layers == adapter.num_layers, name
        assert [facts.units_of(l) for l in range(facts.n_layers)] == [s.units for s in adapter.sites], name
    for name in ("gpt2", "gpt2-medium", "bert-base-uncased", "roberta-base"):  # hub models: their standard configs
        cfg = _random_hf_config(name).to_dict()
        assert (model_facts(name).n_layers, model_facts(name).units) == (_layers_in_config(cfg),
                                                                         _mlp_units_in_config(cfg)), name


def test_local_model_folder_facts(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 4,
                                                      "intermediate_size": 64}))
    f = model_facts(tmp_path)
    assert (f.modality, f.n_layers, f.units) == ("text", 4, 64)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2", "n_layer": 2, "n_embd": 8}))
    assert model_facts(tmp_path).units == 32


@pytest.mark.parametrize("n", [2, 3])
def test_a_small_probe_finishes_with_results_a_page_and_warnings(tmp_path, capsys, n):
    probe = tiny_probe(tmp_path / f"p{n}.json", n, n)
    out = tmp_path / "out"
    assert main(["scan", "--model", "minilm", "--concept", str(probe), "--layers", "2", "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    assert (out / "report.html").is_file()
    assert data["confidence_head"]["heldout_accuracy"] is None  # could not be measured: saved as null
    warnings = " ".join(data["warnings"])
    assert "small probe" in warnings and "held-out accuracy could not be measured" in warnings
    printed = capsys.readouterr().out
    assert "warning: small probe" in printed and "held-out accuracy could not be measured" in printed
    assert "could not be measured" in (out / "report.html").read_text()


def test_any_value_that_cannot_be_computed_is_null_with_a_warning(tmp_path):
    from neurolens_lightning.io import nonfinite_paths, nonfinite_warning

    data = {"a": {"b": float("nan")}, "c": [1.0, float("inf")], "warnings": []}
    assert nonfinite_paths(data) == ["a.b", "c[1]"]
    assert "a.b, c[1]" in nonfinite_warning(nonfinite_paths(data))


def test_single_example_groups_split_and_a_too_small_part_is_named(tmp_path):
    probe = load_concept(tiny_probe(tmp_path / "single.json", 7, 7, groups=True))
    ranking, held = probe.split(0.5)
    assert min(len(ranking.positive), len(held.positive)) >= 2  # was: "field 'positive' has 0 example(s)"
    with pytest.raises(ProbeError, match=r"the ranking part of the split .* gets \d+ concept and 1 control") as e:
        load_concept(tiny_probe(tmp_path / "four.json", 4, 4)).split(0.9)
    assert "holdout nearer 0.5" in str(e.value)


def test_sigterm_ends_a_scan_in_one_line_and_writes_nothing(tmp_path):
    out = tmp_path / "out"
    p = subprocess.Popen([sys.executable, "-m", "neurolens_lightning.cli", "scan", "--model", "minilm", "--concept",
                          "royalty", "--ablate", "--out", str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True)
    time.sleep(6)
    p.send_signal(signal.SIGTERM)
    _, err = p.communicate(timeout=60)
    lines = [l for l in err.splitlines() if l.startswith("neurolens") or "Traceback" in l]
    assert p.returncode == 130 and lines == ["neurolens: interrupted (SIGTERM); nothing was written (an output folder "
                                             "that existed still holds its earlier run, whole)"], err[-2000:]
    assert not out.exists() and [x for x in tmp_path.iterdir()] == []
