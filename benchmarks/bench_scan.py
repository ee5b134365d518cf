"""Scoring overhead and memory of `scan` on a GPT-2-small-sized model (random weights).

Prints, measured side by side in one run (repeats interleaved, best of each), as multiples of F_dyn = one
plain no-grad forward over every probe example in the scan's batches (per-batch padding):
  * the activation pass alone (scoring without importance: hooks + pooling + metric updates);
  * the importance pass alone (one forward/backward over the concept inputs; the probe's tasks are dropped so
    importance runs over every positive example - the harder case);
  * the full scan as two passes (`run_activation_pass` then `run_importance_pass`);
  * the full scan fused (`ConceptScanner.run()`: one forward+backward over the positives gives their
    activations and importance, one forward over the negatives; issue 11 item 3);
and checks that the fused and the two-pass scan give the same scores (to 1e-6; it exits non-zero otherwise);
  * peak memory (process RSS on CPU, max_memory_allocated on CUDA) of the full (fused) scan for 1x vs 10x the
    examples, each in a fresh subprocess (--no-memory skips it).

Targets: activation pass <= 1.3 (issue 3), full scan <= 3.5 (issue 3), fused full scan <= 1.6 (issue 11),
memory ratio <= 1.2.

    python benchmarks/bench_scan.py [--repeats 3] [--batch-size 16] [--no-memory] [--threads N]

Not a test: run it by hand.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (base_concept, concept_texts, gpt2_small_random, local_bpe_tokenizer,  # noqa: E402
                     peak_rss_since_reset_mb, replicate, reset_peak_rss)

from neurolens_lightning.adapters import adapter_for  # noqa: E402
from neurolens_lightning.scanner import ConceptScanner  # noqa: E402


def setup(times: int = 1, drop_tasks: bool = True):
    concept = base_concept("royalty")
    tok = local_bpe_tokenizer(concept_texts(concept))
    model = gpt2_small_random()
    adapter = adapter_for(model, tok, name="gpt2-small-random")
    return adapter, replicate(concept, times, drop_tasks=drop_tasks)


def plain_forward(adapter, scanner):
    with torch.no_grad():
        for _, batch in scanner.batches():
            adapter.forward(batch)


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def interleaved(fns: dict, repeats: int) -> dict[str, float]:
    """Best-of-``repeats`` wall time of each function, the repeats interleaved (one warm-up call each first), so
    that load from other processes on a shared machine hits every variant alike."""
    for fn in fns.values():
        fn()
    best = {k: float("inf") for k in fns}
    for _ in range(repeats):
        for k, fn in fns.items():
            _sync()
            t = time.perf_counter()
            fn()
            _sync()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def max_score_difference(a, b) -> tuple[float, str]:
    """Largest absolute difference over every tensor score of two NeuronScores (inf where integer scores
    such as role, order or top example ids differ at all, or where shapes / None-ness differ)."""
    worst, where = 0.0, "-"
    for f in dataclasses.fields(a):
        x, y = getattr(a, f.name), getattr(b, f.name)
        if not isinstance(x, torch.Tensor) and not isinstance(y, torch.Tensor):
            diff = 0.0 if x == y else float("inf")
        elif not (isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor)) or x.shape != y.shape:
            diff = float("inf")
        elif x.is_floating_point():
            d = (x.double() - y.double()).abs()
            both_nan = x.isnan() & y.isnan()
            diff = float(torch.where(both_nan, torch.zeros_like(d), d).nan_to_num(nan=float("inf")).max()) \
                if x.numel() else 0.0
        else:
            diff = 0.0 if torch.equal(x, y) else float("inf")
        if diff > worst:
            worst, where = diff, f.name
    return worst, where


def memory_child(times: int, importance: bool) -> None:
    adapter, concept = setup(times)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = reset_peak_rss()  # model loaded; measure the peak of the scoring itself
    scanner = ConceptScanner(adapter, concept, batch_size=16, importance=importance)
    scanner.run()
    scanner.compute()
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else peak_rss_since_reset_mb()
    print(json.dumps({"peak_mb": peak, "base_mb": base, "n_examples": len(concept.positive) + len(concept.negative)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--memory-child", type=int, default=0)
    ap.add_argument("--importance", action="store_true")
    ap.add_argument("--no-memory", action="store_true", help="skip the 1x vs 10x peak-memory subprocesses")
    ap.add_argument("--threads", type=int, default=0,
                    help="torch intra-op threads on CPU (default: torch's own); 1 is steadier on a busy machine")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.memory_child:
        memory_child(args.memory_child, args.importance)
        return

    adapter, concept = setup(1)
    dev = adapter.device
    print(f"device: {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else 'CPU, ' + str(torch.get_num_threads()) + ' threads'})")
    print(f"model: GPT-2 small shape (12 x 3072 MLP units, random weights); concept royalty "
          f"({len(concept.positive)} pos + {len(concept.negative)} neg examples, tasks dropped), batch {args.batch_size}")
    kw = dict(batch_size=args.batch_size)
    sc_act = ConceptScanner(adapter, concept, importance=False, **kw)
    sc_two = ConceptScanner(adapter, concept, importance=True, **kw)
    sc_fused = ConceptScanner(adapter, concept, importance=True, **kw)
    if not sc_fused.can_fuse():
        raise SystemExit("the fused pass does not apply to this setup (can_fuse() is False)")
    scores: dict[str, object] = {}
    imp_times: list[float] = []

    def forward():
        plain_forward(adapter, sc_act)

    def activation_pass():
        sc_act.reset()
        sc_act.run_activation_pass()
        sc_act.compute()

    def two_pass():
        sc_two.reset()
        sc_two.run_activation_pass()
        t = time.perf_counter()
        sc_two.run_importance_pass()
        _sync()
        imp_times.append(time.perf_counter() - t)
        scores["two"] = sc_two.compute()

    def fused():
        sc_fused.reset()
        sc_fused.run()
        if not sc_fused.last_run_fused:
            raise SystemExit("ConceptScanner.run() did not take the fused path")
        scores["fused"] = sc_fused.compute()

    best = interleaved({"forward": forward, "activation": activation_pass, "two_pass": two_pass, "fused": fused},
                       args.repeats)
    t_fwd = best["forward"]
    t_imp = min(imp_times[1:]) if len(imp_times) > 1 else imp_times[0]  # the warm-up call is not counted
    print(f"plain forward (F_dyn):              {t_fwd:8.3f} s")
    print(f"activation pass (no importance):    {best['activation']:8.3f} s   {best['activation'] / t_fwd:5.2f} F_dyn"
          "  (target <= 1.3)")
    print(f"importance pass alone:              {t_imp:8.3f} s   {t_imp / t_fwd:5.2f} F_dyn")
    print(f"full scan, two passes:              {best['two_pass']:8.3f} s   {best['two_pass'] / t_fwd:5.2f} F_dyn"
          "  (target <= 3.5)")
    print(f"full scan, fused (run()):           {best['fused']:8.3f} s   {best['fused'] / t_fwd:5.2f} F_dyn"
          f"  (target <= 1.6)")
    n_tail = len(concept.positive) % args.batch_size
    print(f"  fused: {sc_fused.fused_batches} batches of {args.batch_size} positives in one forward+backward each; "
          f"{n_tail} positives share a batch with negatives (forwarded again for importance)")
    print(f"fused / two passes:                 {best['fused'] / best['two_pass']:8.3f}")
    worst, name = max_score_difference(scores["two"], scores["fused"])
    ok = worst <= 1e-6
    print(f"scores fused vs two passes: max |difference| {worst:.3g} (in {name}) over every score; "
          f"{'agree to 1e-6' if ok else 'DISAGREE beyond 1e-6'}")
    if not ok:
        raise SystemExit(1)
    if args.no_memory:
        return

    peaks = {}
    for times in (1, 10):
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(times), "--importance"],
                             capture_output=True, text=True, check=True)
        peaks[times] = json.loads(out.stdout.strip().splitlines()[-1])
    p1, p10 = peaks[1], peaks[10]
    kind = "CUDA max_memory_allocated" if torch.cuda.is_available() else "peak RSS during scoring (VmHWM reset after loading)"
    print(f"peak memory ({kind}), full scan (run(): fused):")
    for name, p in (("1x ", p1), ("10x", p10)):
        print(f"  {name} ({p['n_examples']:5d} examples): peak {p['peak_mb']:8.1f} MiB  "
              f"(model + runtime before scoring {p['base_mb']:7.1f} MiB, working memory {p['peak_mb'] - p['base_mb']:6.1f} MiB)")
    print(f"  ratio 10x / 1x: peak {p10['peak_mb'] / p1['peak_mb']:5.3f} (target <= 1.2), working memory "
          f"{(p10['peak_mb'] - p10['base_mb']) / max(p1['peak_mb'] - p1['base_mb'], 1e-9):5.3f}")


if __name__ == "__main__":
    main()
