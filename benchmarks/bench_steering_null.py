"""Does steering's verdict discriminate? Random single neurons vs each concept's strongest validated neuron.

For each concept: one ``scan(..., ablate=True, top_k=10)`` (the README's main job), then ``dose_response`` — what
``neurolens steer`` runs — on

* the concept's strongest validated neuron (largest Δ), steered as ``neurolens steer --from`` does: on the scan's
  ranking split (inputs that did not validate it), direction +1;
* ``--random`` random single neurons of the scanned layers, steered as ``neurolens steer --neurons L:I`` does (the
  held-out split, direction +1).

It prints, per neuron, p_null, beyond_null, the effect, the wrong-direction share and the old trend rule's
"monotonic", then the share of random neurons beyond the null with its binomial bound (a valid test: at most the
nominal 0.05 plus its margin) beside the share the old rule called "monotonic".

    python benchmarks/bench_steering_null.py --random 10            # per concept (royalty, negation)
"""

from __future__ import annotations

import argparse
import math
import os
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import neurolens_lightning as nl  # noqa: E402
from neurolens_lightning.registry import load_model  # noqa: E402
from neurolens_lightning.steering import dose_response  # noqa: E402


def row(tag: str, neuron: tuple[int, int], t: dict, secs: float) -> str:
    return (f"  {tag:<10} {neuron[0]}:{neuron[1]:<5} p_null {t['p_null']:.4f} ({t['null_n']:>3} sets)  beyond_null "
            f"{str(t['beyond_null']):<5}  effect {t['effect']:+.4f} [{t['effect_ci_low']:+.4f}, {t['effect_ci_high']:+.4f}]"
            f"  wrong direction {t['wrong_direction_share']:.2f}  old 'monotonic' {str(t['monotonic']):<5}  {secs:.0f} s")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--concepts", nargs="+", default=["royalty", "negation"])
    ap.add_argument("--random", type=int, default=10, help="random single neurons per concept")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"# bench_steering_null — device {dev}, load average {os.getloadavg()[0]:.2f}")
    adapter = load_model("minilm")
    rnd_beyond = rnd_mono = n_rnd = 0
    for concept in args.concepts:
        t0 = time.perf_counter()
        r = nl.scan(adapter, concept, ablate=True, top_k=10, seed=args.seed)
        valid = sorted(((a["delta"], key) for key, a in r.ablation.items()
                        if a["validated"] and a["direction"] == "drop"), reverse=True)
        print(f"\n## {concept}: scan validated {len(valid)} ({time.perf_counter() - t0:.0f} s)")
        if valid:
            best = valid[0][1]
            t0 = time.perf_counter()
            d = dose_response(adapter, concept, [best], inputs="ranking", seed=args.seed, n_examples=1).to_dict()
            print(row("validated", best, d["test"], time.perf_counter() - t0))
        rng = random.Random(f"{concept}:{args.seed}")  # other random neurons for each concept
        layers = r.layers
        for _ in range(args.random):
            l = rng.choice(layers)
            n = (l, rng.randrange(adapter.sites[l].units))
            t0 = time.perf_counter()
            d = dose_response(adapter, concept, [n], seed=args.seed, n_examples=1).to_dict()
            t = d["test"]
            print(row("random", n, t, time.perf_counter() - t0))
            n_rnd += 1
            rnd_beyond += bool(t["beyond_null"])
            rnd_mono += bool(t["monotonic"])
    share = rnd_beyond / max(n_rnd, 1)
    bound = 0.05 + 2 * math.sqrt(0.05 * 0.95 / max(n_rnd, 1))
    print(f"\nrandom single neurons beyond the null: {rnd_beyond}/{n_rnd} = {share:.3f} (bound 0.05 + 2 SE = "
          f"{bound:.3f}: {'within' if share <= bound else 'ABOVE'}); the old rule's 'monotonic': {rnd_mono}/{n_rnd}; "
          f"load average {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
