"""How many examples does a concept need? Recovery and false discoveries against probe size, on real MiniLM.

The reference is the full built-in probe (e.g. royalty: 67 concept + 67 control sentences): its
top-10 candidates. For each probe size n (examples per class) the script draws ``--draws``
random sub-probes (stratified by phrasing group), scans them, and prints:

* recall: the share of the reference top-10 that are candidates of the sub-probe at all, and
  that are in its top-10;
* candidates: how many neurons qualify (FDR-significant, positively selective, layer-scaled d
  above the floor);
* the median width of the 95% CI of d over the sub-probe's top-10;
* false candidates under a label-shuffled null: the same sub-probe with the concept / control
  labels permuted at random (no concept left), where every candidate is a false discovery.

    python benchmarks/bench_probe_size.py [--concept royalty] [--sizes 6 10 15 20 30 40] [--draws 5]

The README's "How many examples a concept needs" quotes this script's output.
"""

from __future__ import annotations

import argparse
import os
import random
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurolens_lightning.concepts import load_concept  # noqa: E402
from neurolens_lightning.registry import load_model  # noqa: E402
from neurolens_lightning.results import ScanResult  # noqa: E402
from neurolens_lightning.scanner import ConceptScanner  # noqa: E402


def scan(adapter, concept) -> ScanResult:
    sc = ConceptScanner(adapter, concept)
    sc.run()
    return ScanResult(model=adapter.describe(), concept=concept, layers=sc.layers, units=[s.units for s in sc.sites],
                      scores=sc.compute())


def subsample(concept, n: int, rng: random.Random, shuffle_labels: bool = False):
    """``n`` positives (round-robin over the phrasing groups) and ``n`` negatives, drawn at random."""
    by_group: dict[str, list[int]] = {}
    for i, g in enumerate(concept.positive_groups):
        by_group.setdefault(g, []).append(i)
    for idx in by_group.values():
        rng.shuffle(idx)
    pos: list[int] = []
    while len(pos) < n:
        for idx in by_group.values():
            if idx and len(pos) < n:
                pos.append(idx.pop())
    neg = rng.sample(range(len(concept.negative)), n)
    P = [concept.positive[i] for i in pos]
    G = [concept.positive_groups[i] for i in pos]
    N = [concept.negative[i] for i in neg]
    if shuffle_labels:  # the null: a random half of the pooled examples is called "concept"
        pooled = P + N
        rng.shuffle(pooled)
        P, N = pooled[:n], pooled[n:]
        G = [f"fold{i % 3}" for i in range(n)]
    return replace(concept, positive=P, negative=N, positive_groups=G, tasks=[])


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concept", default="royalty")
    ap.add_argument("--sizes", type=int, nargs="+", default=[6, 10, 15, 20, 30, 40])
    ap.add_argument("--draws", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    adapter = load_model("minilm")
    concept = replace(load_concept(args.concept), tasks=[])
    ref = scan(adapter, concept)
    ref_top = {(c["layer"], c["index"]) for c in ref.candidates(10)}
    print(f"bench_probe_size · MiniLM · concept {args.concept} · load average {os.getloadavg()[0]:.2f}")
    print(f"reference: the full probe ({len(concept.positive)} + {len(concept.negative)}) has "
          f"{ref.scores.n_candidates} candidates; its top-10 is the target\n")
    print(f"{'n/class':>7} {'recall (any cand.)':>18} {'recall (top-10)':>15} {'candidates':>10} "
          f"{'CI width of d':>13} {'false cand. (shuffled)':>22}")
    for n in args.sizes:
        rng = random.Random(n)
        rec_any, rec_top, n_cand, width, false = [], [], [], [], []
        for _ in range(args.draws):
            r = scan(adapter, subsample(concept, n, rng))
            cands = r.candidates(r.scores.n_candidates)
            keys = {(c["layer"], c["index"]) for c in cands}
            top = {(c["layer"], c["index"]) for c in cands[:10]}
            rec_any.append(len(ref_top & keys) / len(ref_top))
            rec_top.append(len(ref_top & top) / len(ref_top))
            n_cand.append(r.scores.n_candidates)
            width.append(float(np.median([c["selectivity_ci"][1] - c["selectivity_ci"][0] for c in r.ranked(10)])))
            false.append(scan(adapter, subsample(concept, n, rng, shuffle_labels=True)).scores.n_candidates)
        print(f"{n:>7} {np.mean(rec_any):>18.2f} {np.mean(rec_top):>15.2f} {np.mean(n_cand):>10.1f} "
              f"{np.mean(width):>13.2f} {np.mean(false):>22.1f}")


if __name__ == "__main__":
    main()
