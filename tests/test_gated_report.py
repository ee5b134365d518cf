"""The report and W&B on a gated-MLP decoder: a real scan with ablation of the planted tiny Llama
(``test_planted_decoders.planted_decoder``: unit PLANTED of layer 0 carries the concept) is saved, its page states
the Llama and the planted neuron's verdict, renders without console errors with every figure drawn, and the
same results log to an offline W&B run (charts, candidate table, the page, the history row) that is read back."""

from __future__ import annotations

import json
import re
from html import escape as html_escape

import pytest
from helpers import CONCEPT, NEGATIVE, PLANTED, make_word_tokenizer
from test_planted_decoders import planted_decoder
from test_report import assert_all_drawn, console_errors, needs_chromium, page_text, render
from test_wandb import offline_env, wandb_records  # noqa: F401  (offline_env is a fixture)

import neurolens_lightning as nl
from neurolens_lightning.report import log_scan_to_wandb, wandb_run_for

pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def llama_report(tmp_path_factory):
    tok = make_word_tokenizer("gpt2", CONCEPT + NEGATIVE + ["throne", "seat", "bowed"])
    from helpers import planted_probe

    result = nl.scan(planted_decoder("llama", tok), planted_probe("gpt2"), tokenizer=tok, ablate=True, top_k=2,
                     neurons=[(0, PLANTED)], null_samples=20)
    out = result.save(tmp_path_factory.mktemp("llama") / "llama-planted")
    return out, json.loads((out / "results.json").read_text(encoding="utf-8"))


def test_page_of_a_llama_states_model_and_verdict(llama_report):
    out, data = llama_report
    assert data["model_info"]["type"] == "LlamaForCausalLM" and data["model_info"]["family"] == "decoder"
    rec = next(n for n in data["neurons"] if (n["layer"], n["index"]) == (0, PLANTED))
    assert rec["ablation"]["verdict"] == "validated"
    page = (out / "report.html").read_text(encoding="utf-8")
    text = page_text(page)
    assert "LlamaForCausalLM" in text
    assert f"L0:{PLANTED}" in page
    summ = data["ablation_summary"]
    assert f"Of the {summ['n_tested']} neurons tested: " in text
    assert html_escape(data["settings"]["split"]) in page
    assert re.search(r"model\.layers\.\d+\.mlp\.down_proj|down_proj", page), "the site (down_proj input) is named"


@needs_chromium
def test_page_of_a_llama_renders(llama_report):
    out, data = llama_report
    dom, log, _ = render(out / "report.html")
    assert not console_errors(log), console_errors(log)
    assert_all_drawn(dom, data)


def test_llama_scan_logs_to_wandb_offline(llama_report, offline_env):  # noqa: F811
    out, data = llama_report
    run = wandb_run_for({"enabled": True, "project": "neurolens-test"})
    logged = log_scan_to_wandb(data, report_path=out / "report.html", run=run, step=3)
    run.finish()
    run_dir = next((offline_env / "wandb").glob("offline-run-*"))
    html = {p.name.split("_")[0] for p in (run_dir / "files" / "media" / "html").rglob("*.html")}
    assert {"layers", "heatmap", "scatter", "sankey", "report"} <= html, sorted(html)
    records = list(wandb_records(next(run_dir.glob("run-*.wandb"))))
    items = {(i.key or "/".join(i.nested_key)): i.value_json for r in records
             if r.WhichOneof("record_type") == "history" for i in r.history.item}
    assert json.loads(items["neurolens/n_significant_fdr"]) == data["n_significant_fdr"]
    assert json.loads(items["trainer/global_step"]) == 3
    assert "neurolens/candidates" in logged
