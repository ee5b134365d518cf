"""Inputs that would mislead are caught (issue 21 item 8).

* exact duplicate examples are dropped with one warning (results.json, page, console); an example in both
  classes is an error naming it; a 4x duplicated probe scores exactly like the plain one;
* text is read up to the model's real length (configured max_length, the position embeddings, the tokenizer's
  model_max_length) with one warning counting the cut examples; a [[span]] past the cut is an error naming the
  example; a GPT-2 with fewer than 128 positions does not crash;
* long example texts are stored clipped in results.json and on the page;
* images above 40 megapixels are refused in one line before decoding.
"""

from __future__ import annotations

import json
import struct
import warnings
import zlib
from pathlib import Path

import pytest
import torch

import neurolens_lightning as nl
from neurolens_lightning.concepts import (EXAMPLE_CHARS, MAX_IMAGE_PIXELS, Concept, TextExample, clip_text,
                                          load_concept)
from neurolens_lightning.errors import NeuroLensError, ProbeError
from neurolens_lightning.report.page import render_report
from neurolens_lightning.schema import read_results

from helpers import make_word_tokenizer, tiny_bert, tiny_gpt2

pytestmark = pytest.mark.usefixtures("one_thread")

ROYALTY = json.loads((Path(nl.__file__).parent / "builtin_concepts" / "royalty.json").read_text())


def _times4(probe: dict) -> dict:
    """Every example repeated 4x in place (within its phrasing group), the negatives too."""
    return {**probe, "groups": {g: [x for x in v for _ in range(4)] for g, v in probe["groups"].items()},
            "negative": [x for x in probe["negative"] for _ in range(4)]}


@pytest.fixture(scope="module")
def tok():
    return make_word_tokenizer("gpt2")


# ----------------------------------------------------------------------------- duplicates
def test_duplicated_probe_scores_exactly_like_the_plain_one(tok):
    model = tiny_gpt2(tok)
    plain = nl.scan(model=model, tokenizer=tok, concept=ROYALTY)
    dup = nl.scan(model=model, tokenizer=tok, concept=_times4(ROYALTY))
    assert plain.n_significant_fdr > 0
    assert dup.n_significant_fdr == plain.n_significant_fdr
    assert torch.equal(dup.scores.selectivity, plain.scores.selectivity)
    assert (dup.scores.n_pos, dup.scores.n_neg) == (plain.scores.n_pos, plain.scores.n_neg) == (67, 67)
    n = 3 * (67 + 67)
    ws = [w for w in dup.all_warnings() if w.startswith("duplicate examples")]
    assert len(ws) == 1 and f"{n} exact duplicate(s) were dropped (201 concept, 201 control" in ws[0]
    assert not any(w.startswith("duplicate examples") for w in plain.all_warnings())
    # it travels: results.json "warnings" and the page
    data = dup.to_dict()
    assert ws[0] in data["warnings"]
    assert f"{n} exact duplicate(s) were dropped" in render_report(data)


def test_duplicate_warning_reaches_the_console_and_results_json(tok, tmp_path, capsys, monkeypatch):
    from neurolens_lightning.cli import main

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model_dir = tmp_path / "tiny"
    tiny_gpt2(tok).save_pretrained(model_dir)
    tok.save_pretrained(model_dir)
    probe = tmp_path / "dup.json"
    probe.write_text(json.dumps(_times4(ROYALTY)))
    out = tmp_path / "out"
    assert main(["scan", "--model", str(model_dir), "--concept", str(probe), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "warning: duplicate examples: 402 exact duplicate(s) were dropped" in printed
    data = read_results(out)
    assert any("402 exact duplicate(s)" in w for w in data["warnings"])
    assert "402 exact duplicate(s)" in (out / "report.html").read_text(encoding="utf-8")


def test_duplicates_after_whitespace_normalisation_and_across_groups():
    probe = {"name": "d", "groups": {"king": ["The [[king]] spoke.", "The  [[king]]\tspoke. ", "A [[king]] sat."],
                                     "queen": ["The [[queen]] smiled.", "The [[king]] spoke.", "A [[queen]] ran."]},
             "negative": ["The [[farmer]] spoke.", "A [[baker]] sat.", "A  [[baker]] sat."]}
    c = load_concept(probe)
    assert [e.text for e in c.positive] == ["The king spoke.", "A king sat.", "The queen smiled.", "A queen ran."]
    assert c.positive_groups == ["king", "king", "queen", "queen"]  # the first occurrence keeps its group
    assert len(c.negative) == 2
    assert len(c.warnings) == 1 and "3 exact duplicate(s) were dropped (2 concept, 1 control" in c.warnings[0]
    # the same text with a different span is a different example (span pooling reads different tokens)
    c2 = load_concept({**probe, "groups": {"g": ["The [[king]] spoke.", "The king [[spoke]].", "A [[king]] sat."]},
                       "negative": ["The [[farmer]] spoke.", "A [[baker]] sat."]})
    assert len(c2.positive) == 3 and c2.warnings == []


def test_example_in_both_classes_is_an_error_naming_it():
    probe = {"name": "both", "positive": ["The [[king]] spoke.", "A [[queen]] sat."],
             "negative": ["The  king spoke.", "A man sat."]}
    with pytest.raises(ProbeError, match=r"example 'The king spoke\.' is both a concept \(positive\) and a control"):
        load_concept(probe)


def test_a_concept_built_in_code_is_deduplicated_by_the_pipeline(tok):
    pos = [TextExample(t) for t in ("a king spoke", "a queen smiled", "a prince ran", "the king sat")]
    neg = [TextExample(t) for t in ("a farmer spoke", "a baker smiled", "a sailor ran", "the doctor sat")]
    concept = Concept("c", "text", pos * 2, neg, ["g1", "g2", "g1", "g2"] * 2)
    res = nl.scan(model=tiny_gpt2(tok), tokenizer=tok, concept=concept, importance=False)
    assert res.scores.n_pos == 4
    assert any(w.startswith("duplicate examples: 4 exact duplicate(s)") for w in res.all_warnings())


def test_duplicates_leaving_one_example_name_the_cause():
    with pytest.raises(ProbeError, match=r"'negative' has 1 distinct example\(s\) after dropping 2 exact duplicate"):
        load_concept({"name": "x", "positive": ["a king", "a queen"], "negative": ["a man", "a  man", "a man "]})


# ----------------------------------------------------------------------------- length
def _long(n: int, word: str = "door") -> str:
    return " ".join([word] * n) + "."


def test_span_past_the_cut_is_an_error_naming_the_example(tok):
    model = tiny_gpt2(tok, n_positions=16)
    text = _long(30) + " Then the [[king]] came."
    probe = {**ROYALTY, "negative": ROYALTY["negative"][:-1] + [text]}
    with pytest.raises(ProbeError, match=r"example 'door door .*: its \[\[concept span\]\] 'king' lies \(partly\) "
                                         r"beyond the first 16 tokens .*shorten the example or move the span"):
        nl.scan(model=model, tokenizer=tok, concept=probe, importance=False)


def test_span_past_the_configured_length_is_an_error_for_bert():
    btok = make_word_tokenizer("bert")
    probe = {**ROYALTY, "negative": ROYALTY["negative"][:-1] + [_long(200) + " The [[farmer]] came."]}
    with pytest.raises(ProbeError, match=r"beyond the first 128 tokens that .* reads \(the configured max_length\)"):
        nl.scan(model=tiny_bert(btok), tokenizer=btok, concept=probe, importance=False)


def test_span_inside_the_kept_part_of_a_long_example_is_fine(tok):
    from neurolens_lightning.registry import load_model

    adapter = load_model(tiny_gpt2(tok, n_positions=16), tokenizer=tok)
    ex = load_concept({"name": "x", "positive": ["The [[king]] " + _long(40), "a [[queen]]"],
                       "negative": ["a [[man]]", "a [[dog]]"]}).positive[0]
    batch = adapter.encode([ex])
    assert batch.inputs["input_ids"].shape[1] == 16 and int(batch.span_mask.sum()) == 1
    assert adapter.truncated([ex]) == [0]


def test_long_examples_are_counted_in_one_warning(tok):
    long3 = [_long(200, "king"), _long(150, "crown"), _long(300, "throne")]
    probe = {"name": "long", "positive": [f"the king {w} spoke" for w in ("old", "young", "tall", "kind")] + long3,
             "negative": [f"the farmer {w} spoke" for w in ("old", "young", "tall", "kind", "wise", "calm")]}
    res = nl.scan(model=tiny_gpt2(tok), tokenizer=tok, concept=probe, importance=False)
    ws = [w for w in res.all_warnings() if w.startswith("long examples")]
    assert len(ws) == 1, res.all_warnings()
    assert "3 of 13 examples are longer than the 128 tokens" in ws[0] and "the configured max_length" in ws[0]
    assert ws[0] in res.to_dict()["warnings"]


def test_tiny_gpt2_with_16_positions_scans_long_examples_and_prompts(tok):
    model = tiny_gpt2(tok, n_positions=16)
    probe = {**ROYALTY, "negative": ROYALTY["negative"] + [_long(60)],
             "tasks": ROYALTY["tasks"] + [{"prompt": _long(40, "the") + " The king sat on his", "target": " throne"},
                                          {"prompt": _long(12, "the") + " The king sat on his",
                                           "target": " " + _long(9, "throne")}]}  # a 10-token target
    res = nl.scan(model=model, tokenizer=tok, concept=probe, top_k=2, ablate=True, null_samples=4)
    assert torch.isfinite(res.scores.selectivity).all()
    ws = [w for w in res.all_warnings() if w.startswith("long examples")]
    assert len(ws) == 1 and "1 of 135 examples and 2 of 17 task prompts are longer than the 16 tokens" in ws[0]
    assert "(its n_positions)" in ws[0]
    # every task, prompt cut on the left so that prompt + target fit the 16 positions, runs through the model
    from neurolens_lightning.registry import load_model

    adapter = load_model(model, tokenizer=tok)
    batch = adapter.encode_confidence(None, load_concept(probe).tasks)
    assert batch.inputs["input_ids"].shape[1] == 16
    with torch.no_grad():
        assert torch.isfinite(adapter.confidence(batch, adapter.forward(batch))).all()


def test_a_task_target_longer_than_the_model_reads_is_an_error(tok):
    probe = {**ROYALTY, "tasks": [{"prompt": "The king sat on his", "target": " " + _long(30, "throne")}] * 2}
    with pytest.raises(ProbeError, match=r"leave no room for the prompt in the 16 tokens .* shorten the target"):
        nl.scan(model=tiny_gpt2(tok, n_positions=16), tokenizer=tok, concept=probe, importance=False)


def test_model_limit_includes_the_roberta_offset_and_the_tokenizer():
    from neurolens_lightning.adapters.text import model_token_limit

    from helpers import tiny_roberta

    rtok = make_word_tokenizer("roberta")
    assert model_token_limit(tiny_roberta(rtok, max_len=20), rtok)[0] == 20  # 22 positions, offset pad_id + 1 = 2
    small = make_word_tokenizer("gpt2")
    small.model_max_length = 10
    assert model_token_limit(tiny_gpt2(small), small) == (10, "its tokenizer's model_max_length")


# ----------------------------------------------------------------------------- long texts in results.json
def test_clip_text_keeps_the_span_visible():
    text = "x" * 5000 + " the king " + "y" * 5000
    clipped, span = clip_text(text, (5005, 5009))
    assert len(clipped) <= EXAMPLE_CHARS + 2 and clipped[span[0]:span[1]] == "king"
    assert clipped.startswith("…") and clipped.endswith("…")
    assert clip_text("short", (0, 5)) == ("short", (0, 5))
    assert clip_text("z" * 1000)[0] == "z" * (EXAMPLE_CHARS - 1) + "…"


def test_long_examples_are_stored_clipped_in_results_and_the_page(tok, tmp_path):
    huge = "the king " * 50_000  # 450 kB
    probe = {"name": "big", "positive": ["the king spoke", "a queen sat", "the prince ran", huge],
             "negative": ["the farmer spoke", "a baker sat", "the sailor ran", "a doctor came"]}
    res = nl.scan(model=tiny_gpt2(tok), tokenizer=tok, concept=probe, importance=False)
    out = res.save(tmp_path / "out")
    raw = (out / "results.json").read_text(encoding="utf-8")
    data = read_results(out)
    exs = [e for n in data["neurons"] for e in n.get("top_examples") or []]
    clipped = [e for e in exs if "text_chars" in e]
    assert clipped, "the long example should be among the top examples"
    assert all(e["text_chars"] == len(huge) and len(e["text"]) <= EXAMPLE_CHARS for e in clipped)
    assert all(len(e["text"]) <= EXAMPLE_CHARS for e in exs)
    assert len(raw) < len(huge) and "the king " * 40 not in raw  # not even one copy of the full text
    assert "the king " * 40 not in (out / "report.html").read_text(encoding="utf-8")


def test_page_clips_a_long_text_of_an_older_results_json():
    from neurolens_lightning.report.page import _text_html

    text = "a " * 20_000 + "the king"
    html = _text_html({"text": text, "span": [len(text) - 4, len(text)]})
    assert len(html) < 2 * EXAMPLE_CHARS and "<mark>king</mark>" in html


# ----------------------------------------------------------------------------- images
def _png_header(path: Path, w: int, h: int) -> Path:
    """A PNG whose header claims ``w x h`` (no pixel data: a few dozen bytes)."""
    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"")) +
                     chunk(b"IEND", b""))
    return path


@pytest.mark.parametrize("side", [20000, 12000])
def test_huge_image_is_refused_in_one_line_before_decoding(tmp_path, side):
    big = _png_header(tmp_path / "big.png", side, side)
    red = Path(nl.__file__).parent / "builtin_concepts" / "images" / "red"
    probe = {"name": "img", "modality": "image", "positive": [str(big), *map(str, sorted(red.glob("pos_*"))[:3])],
             "negative": [str(p) for p in sorted(red.glob("neg_*"))[:3]]}
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no PIL DecompressionBombWarning either
        with pytest.raises(ProbeError) as e:
            load_concept(probe)
    msg = str(e.value)
    assert len(msg.splitlines()) == 1 and "big.png" in msg and f"{MAX_IMAGE_PIXELS / 1e6:g} megapixels" in msg
    if side == 12000:
        assert "12000x12000 (144 megapixels)" in msg


def test_huge_image_is_refused_by_the_loader_and_the_cli(tmp_path, capsys):
    from neurolens_lightning.adapters.resnet import load_image_tensor
    from neurolens_lightning.cli import main

    big = _png_header(tmp_path / "big.png", 20000, 20000)
    with pytest.raises(NeuroLensError, match="megapixels"):
        load_image_tensor(big, 32)
    _png_header(tmp_path / "ok.png", 8, 8)
    probe = tmp_path / "p.json"
    probe.write_text(json.dumps({"name": "img", "modality": "image", "positive": ["big.png", "ok.png"],
                                 "negative": ["ok.png", "ok.png"]}))
    assert main(["scan", "--model", "resnet18", "--weights", "random", "--concept", str(probe),
                 "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "big.png" in err and "megapixels" in err, err
