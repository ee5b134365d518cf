"""Calibration of the causal verdict: how often are *random* neurons validated, and are planted ones found?

A neuron drawn at random from a layer is exchangeable with that layer's null neurons, so the
decision rule must validate it with probability <= alpha (family-wise over the candidates).
This script measures it on real data where the truth is known:

1. It ablates a pool of random neurons per layer (exact Δ on the held-out concept inputs and
   on the control inputs, per example) with NeuroLens' own runner.
2. It draws many families of ``m`` random "candidates" from the pool; for each it builds the
   null as the rest of the pool in a random order, and applies the shipped decision rule
   (:func:`~neurolens_lightning.ablation.sequential_p` with the null capped at
   ``null_size_needed(m, alpha)``, Holm, then :func:`~neurolens_lightning.ablation.decide`
   with the bootstrap CIs and ``min_effect`` of a real run, as if every random neuron were a
   selective candidate - the worst case).
3. It prints the family-wise error rate (FWER) of the p-value test alone and of the full rule,
   the per-neuron rates at p <= 0.01 / 0.05, each with its binomial standard error, beside the
   nominal levels, and the same for the previous rule (normal z against 50 null neurons) for
   contrast. The binomial error treats families as independent; they share one pool of
   neurons, so it is a lower bound on the real error.
4. Power: the planted causal neuron of a tiny hand-built GPT-2 / BERT (tests/helpers.py) is put
   in each family in place of one random candidate; the script prints how often it is validated.

    python benchmarks/bench_calibration.py                 # MiniLM (royalty) + planted GPT-2 and BERT
    python benchmarks/bench_calibration.py --skip-minilm   # planted models only (~1 min)

Figures quoted in the README come from this script.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests"))

from neurolens_lightning.ablation import (AblationJob, AblationRunner, ablation_inputs, bootstrap_ci,  # noqa: E402
                                          decide, default_min_effect, null_size_needed, run_chunks, sequential_p)
from neurolens_lightning.concepts import load_concept  # noqa: E402
from neurolens_lightning.ranking import holm_adjust  # noqa: E402
from neurolens_lightning.scanner import ConceptScanner  # noqa: E402


def pool_deltas(adapter, concept, layers, per_layer, seed=0, extra=(), replicas=8):
    """Per-example Δ on concept and control inputs for ``per_layer`` random neurons of each layer (+ ``extra``)."""
    rank, held = concept.split(0.5, seed=0)
    scanner = ConceptScanner(adapter, rank, layers=layers)
    scanner.run()  # fits the probe head where the model has no output head
    site_pos = {s.layer: i for i, s in enumerate(scanner.sites)}
    rng = random.Random(seed)
    units: list[tuple[int, int]] = []
    for l in layers:
        n = scanner.sites[site_pos[l]].units
        units += [(l, u) for u in rng.sample(range(n), min(per_layer, n)) if (l, u) not in extra]
    units += list(extra)
    jobs = [AblationJob([(site_pos[l], u)], "candidate", l) for l, u in units]
    runner = AblationRunner(adapter, scanner.sites, jobs, replicas=replicas, head=scanner.head,
                            offsets=scanner.offsets)
    chunks = ablation_inputs(adapter, scanner, held, batch_size=16)
    t = time.perf_counter()
    run_chunks(runner, adapter, scanner, chunks, seed=0)
    secs = time.perf_counter() - t
    return units, runner.deltas("concept"), runner.deltas("control"), default_min_effect(scanner), secs


def simulate(units, d_con, d_ctl, min_effect, m=10, alpha=0.05, families=2000, planted=None, seed=0,
             n_boot=400):
    """FWER / per-neuron rates of the shipped rule and of the old z rule on families of random candidates."""
    rng = np.random.default_rng(seed)
    delta = d_con.mean(1).numpy()
    by_layer: dict[int, list[int]] = {}
    for k, (l, _) in enumerate(units):
        if planted is None or (l, units[k][1]) != planted:
            by_layer.setdefault(l, []).append(k)
    n_max = null_size_needed(m, alpha)
    lo, hi = bootstrap_ci(d_con, n_boot=n_boot, seed=seed)
    slo, shi = bootstrap_ci(d_con, n_boot=n_boot, seed=seed + 1, minus=d_ctl)
    random_idx = [k for ks in by_layer.values() for k in ks]
    planted_k = units.index(planted) if planted is not None else None
    fw_p = fw_full = fw_old = 0
    single_01 = single_05 = n_single = 0
    power = 0
    short = False
    for _ in range(families):
        cands = list(rng.choice(random_idx, size=m, replace=False))
        if planted_k is not None:
            cands[0] = planted_k
        ps, ps_old = [], []
        for k in cands:
            l = units[k][0]
            others = [j for j in by_layer[l] if j not in cands]
            order = rng.permutation(others)
            seq = delta[order[:n_max]]
            short = short or len(seq) < n_max
            p, _, _ = sequential_p(float(delta[k]), seq.tolist(), h=10)
            ps.append(p)
            old = delta[order[:50]]
            z = (delta[k] - old.mean()) / old.std(ddof=1)
            ps_old.append(0.5 * math.erfc(z / math.sqrt(2)))
            if k != planted_k:
                n_single += 1
                single_01 += p <= 0.01
                single_05 += p <= 0.05
        holm = holm_adjust(torch.tensor(ps, dtype=torch.float64)).tolist()
        holm_old = holm_adjust(torch.tensor(ps_old, dtype=torch.float64)).tolist()
        verdicts = [decide(float(delta[k]), 1, (lo[k], hi[k]), (slo[k], shi[k]), ph, alpha, min_effect, True)[0]
                    for k, ph in zip(cands, holm)]
        rand = [i for i, k in enumerate(cands) if k != planted_k]
        fw_p += any(holm[i] <= alpha for i in rand)
        fw_full += any(verdicts[i] for i in rand)
        fw_old += any(holm_old[i] <= alpha for i in rand)
        if planted_k is not None:
            power += verdicts[0]
    se = lambda r, n: math.sqrt(max(r * (1 - r), 1e-12) / n)  # noqa: E731
    out = {"families": families, "m": m - (planted is not None), "n_max": n_max, "short_null": short,
           "fwer_p": fw_p / families, "fwer_full": fw_full / families, "fwer_old_z": fw_old / families,
           "p01": single_01 / n_single, "p05": single_05 / n_single, "n_single": n_single,
           "se_fwer": se(alpha, families), "se_p01": se(0.01, n_single), "se_p05": se(0.05, n_single)}
    if planted_k is not None:
        out["power"] = power / families
    return out


def kurtosis_by_layer(units, d_con):
    from scipy.stats import kurtosis

    delta = d_con.mean(1).numpy()
    layers = sorted({l for l, _ in units})
    return {l: float(kurtosis(delta[[k for k, (ll, _) in enumerate(units) if ll == l]])) for l in layers}


def report(name, res, kurt, secs, n_jobs):
    print(f"\n== {name}: {n_jobs} neurons ablated exactly in {secs:.0f} s; null excess kurtosis by layer: "
          + ", ".join(f"L{l} {k:.1f}" for l, k in kurt.items()))
    print(f"   {res['families']} families of m = {res['m']} random 'candidates' (null capped at {res['n_max']} "
          f"per layer{', SHORTER where the pool ran out' if res['short_null'] else ''})")
    print(f"   family-wise error, p-value test (Holm):   {res['fwer_p']:.3f}  (nominal <= 0.05, binomial SE "
          f"{res['se_fwer']:.3f})")
    print(f"   family-wise error, full verdict:          {res['fwer_full']:.3f}  (+ CI, specificity, min effect)")
    print(f"   family-wise error, old rule (z, 50 null): {res['fwer_old_z']:.3f}")
    print(f"   per neuron, p <= 0.01: {res['p01']:.4f} (nominal 0.01, SE {res['se_p01']:.4f});  p <= 0.05: "
          f"{res['p05']:.4f} (nominal 0.05, SE {res['se_p05']:.4f}); {res['n_single']} tests")
    if "power" in res:
        print(f"   power: planted causal neuron validated in {res['power']:.3f} of the families")


def planted_model(family: str):
    from helpers import CONCEPT, NEGATIVE, PLANTED, make_word_tokenizer, planted_bert, planted_gpt2, planted_probe

    from neurolens_lightning.adapters import adapter_for
    from neurolens_lightning.concepts import concept_from_dict

    tok = make_word_tokenizer(family, CONCEPT + NEGATIVE + ["throne", "seat", "bowed"])
    model = planted_gpt2(tok) if family == "gpt2" else planted_bert(tok)
    return adapter_for(model, tok, name=f"planted-{family}"), concept_from_dict(planted_probe(family)), PLANTED


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--families", type=int, default=2000)
    ap.add_argument("--m", type=int, default=10, help="random candidates per family")
    ap.add_argument("--per-layer", type=int, default=300, help="random neurons ablated per MiniLM layer")
    ap.add_argument("--layers", type=int, nargs="+", default=[1, 3, 5], help="MiniLM layers")
    ap.add_argument("--skip-minilm", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    print(f"bench_calibration · torch {torch.__version__} · {torch.get_num_threads()} threads · "
          f"load average {os.getloadavg()[0]:.2f} · "
          f"{torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'CPU'}")

    for family in ("gpt2", "bert"):
        adapter, concept, planted = planted_model(family)
        torch.set_num_threads(1)
        units, d_con, d_ctl, me, secs = pool_deltas(adapter, concept, [0, 1], per_layer=128, extra=[])
        torch.set_num_threads(args.threads)
        m = min(args.m, 4)  # 128 units per layer: m / alpha null neurons + m candidates must fit in a layer
        res = simulate(units, d_con, d_ctl, me, m=m + 1, families=args.families, planted=(0, planted))
        report(f"planted tiny {family} (2 layers x 128 units; y = log p(' throne'))", res,
               kurtosis_by_layer(units, d_con), secs, len(units))

    if not args.skip_minilm:
        from neurolens_lightning.registry import load_model

        adapter = load_model("minilm")
        units, d_con, d_ctl, me, secs = pool_deltas(adapter, load_concept("royalty"), args.layers, args.per_layer)
        res = simulate(units, d_con, d_ctl, me, m=args.m, families=args.families)
        report(f"all-MiniLM-L6-v2, royalty held-out split, layers {args.layers} (y = probe log-odds)", res,
               kurtosis_by_layer(units, d_con), secs, len(units))


if __name__ == "__main__":
    main()
