"""`neurolens scan` end to end: a real MiniLM scan writes a valid results.json; bad input writes nothing."""

from __future__ import annotations

import json

import pytest

from neurolens_lightning.cli import main


@pytest.fixture(autouse=True)
def _offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def test_scan_writes_valid_results_json(tmp_path, capsys):
    out = tmp_path / "scan"
    assert main(["scan", "--model", "minilm", "--concept", "royalty", "--layers", "4", "5", "--top-k", "5",
                 "--out", str(out)]) == 0
    data = json.loads((out / "results.json").read_text())
    for key in ("model", "concept", "layers", "n_positive", "n_negative", "n_significant_fdr", "neurons",
                "layer_summary"):
        assert key in data, key
    assert data["model"] == "minilm" and data["concept"] == "royalty" and data["layers"] == [4, 5]
    neurons = data["neurons"]
    assert len(neurons) >= 5 and [n["rank"] for n in neurons[:5]] == [1, 2, 3, 4, 5]
    for n in neurons[:5]:
        assert set(n) >= {"layer", "index", "selectivity", "selectivity_p", "consistency", "importance", "score",
                          "rank", "ablation"}
        assert n["ablation"] is None
    # the real MiniLM has clearly selective royalty neurons
    assert neurons[0]["selectivity"] > 0.8 and neurons[0]["selectivity_p"] < 1e-4
    assert data["n_significant_fdr"] > 100
    assert [s["n_units"] for s in data["layer_summary"]] == [1536, 1536]
    assert (out / "report.html").is_file()
    assert "selective at FDR" in capsys.readouterr().out


@pytest.mark.parametrize("args, message", [
    (["--layers", "7"], "valid indices are 0..5"),
    (["--concept", "no_such_concept"], "unknown concept 'no_such_concept'"),
    (["--model", "no-such-model"], "unknown model 'no-such-model'"),
    (["--neurons", "9:1", "--ablate"], "named neuron layer(s) [9] out of range for minilm"),
    (["--layers", "2", "--neurons", "3:1", "--ablate"], "layer 3 was not scanned (scanned layers: [2])"),
    (["top_kk=3"], "top_kk"),
])
def test_bad_input_is_one_line_and_writes_nothing(tmp_path, capsys, args, message):
    out = tmp_path / "scan"
    base = ["scan", "--model", "minilm", "--concept", "royalty", "--out", str(out)]
    assert main(base + args) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1, err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_class_with_fewer_than_two_examples_writes_nothing(tmp_path, capsys):
    probe = tmp_path / "tiny.json"
    probe.write_text(json.dumps({"name": "tiny", "positive": ["a [[king]] spoke", "the [[queen]] smiled"],
                                 "negative": ["a man spoke"]}))
    out = tmp_path / "scan"
    assert main(["scan", "--model", "minilm", "--concept", str(probe), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "'negative' has 1 example(s)" in err and "at least 2" in err
    assert not out.exists()


def test_nan_activations_are_a_clear_error(tmp_path):
    """A model that produces NaNs gets one clear error, not a report full of NaN scores."""
    import sys
    from pathlib import Path

    import torch

    sys.path.insert(0, str(Path(__file__).parent))
    from helpers import make_word_tokenizer, tiny_gpt2

    import neurolens_lightning as nl

    tok = make_word_tokenizer("gpt2")
    model = tiny_gpt2(tok)
    with torch.no_grad():
        model.transformer.h[0].mlp.c_fc.weight[0, 3] = float("nan")
    with pytest.raises(nl.NeuroLensError, match="NaN"):
        nl.scan(model=model, tokenizer=tok, concept="royalty")


@pytest.mark.parametrize("size", [8, 16])
def test_image_size_too_small_is_a_clear_error(size):
    import neurolens_lightning as nl

    with pytest.raises(nl.NeuroLensError, match="too small"):
        nl.scan(model="resnet18", weights="random", concept="red", image_size=size)


def test_text_concept_on_image_model_is_a_clear_error():
    import neurolens_lightning as nl

    with pytest.raises(nl.NeuroLensError, match="text probe but"):
        nl.scan(model="resnet18", weights="random", concept="royalty", image_size=32)


def test_help_texts_print_percent_signs_once(capsys):
    """argparse formats help strings but prints a description verbatim: no doubled %% reaches the user."""
    from neurolens_lightning.cli import main

    for cmd in ("scan", "steer", "compare", "eval", "concepts"):
        with pytest.raises(SystemExit):
            main([cmd, "--help"])
        assert "%%" not in capsys.readouterr().out, cmd


def test_every_scan_flag_reaches_the_config():
    """A flag missing from the flag list is silently ignored (--suppressors 3 gave suppressors = 0): each flag the
    scan parser defines is forwarded."""
    from neurolens_lightning.cli import build_parser
    from neurolens_lightning.cli.scan import _FLAG_KEYS, _flags_to_dotlist

    args = build_parser().parse_args(["scan", "--suppressors", "3", "--direction", "rise", "--overwrite"])
    dots = _flags_to_dotlist(args)
    assert {"suppressors=3", "direction=rise", "overwrite=True"} <= set(dots), dots
    scan_parser = build_parser()._subparsers._group_actions[0].choices["scan"]
    dests = {a.dest for a in scan_parser._actions} - {"help", "config", "overrides", "func", "wandb", "site"}
    assert dests <= set(_FLAG_KEYS), sorted(dests - set(_FLAG_KEYS))
