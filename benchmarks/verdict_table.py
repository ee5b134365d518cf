"""Print the candidates of a finished scan with their evidence, and how quiet each one is for its layer.

For each of the top candidates of ``results.json``: d with its CI, mean on concept / control,
importance, the layer-scaled d, the ratio of its pooled variance to its layer's median (how
quiet it is: the near-silent unit that used to top MiniLM / royalty had 0.03), and its
ablation verdict (Δ, control Δ, p, Holm p). The variance ratio is recomputed by scoring the
same ranking split again (seconds).

    neurolens scan --model minilm --concept royalty --ablate --top-k 10 --out /tmp/scan
    python benchmarks/verdict_table.py /tmp/scan/results.json [--extra 4:1499]
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from neurolens_lightning.concepts import load_concept  # noqa: E402
from neurolens_lightning.registry import load_model  # noqa: E402
from neurolens_lightning.scanner import ConceptScanner  # noqa: E402


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("results", help="results.json of a scan with --ablate (holdout 0.5, seed 0)")
    ap.add_argument("--extra", nargs="*", default=[], help="more neurons to show, as LAYER:INDEX")
    args = ap.parse_args(argv)
    data = json.loads(Path(args.results).read_text())
    concept = load_concept(data["concept"] if not data["concept_info"].get("source", "").endswith(".json")
                           else data["concept_info"]["source"].split(" [")[0])
    rank = concept.split(0.5, seed=0)[0] if data.get("ablation_summary") else concept
    scanner = ConceptScanner(load_model(data["model"]), rank, layers=data["layers"])
    scanner.run_activation_pass()
    sel = scanner.selectivity.compute()
    pooled = (sel["var_pos"] + sel["var_neg"]) / 2
    layer_of = [s.layer for s in scanner.sites for _ in range(s.units)]
    medians = {l: float(pooled[[i for i, x in enumerate(layer_of) if x == l]].median()) for l in data["layers"]}
    recs = {(n["layer"], n["index"]): n for n in data["neurons"]}
    rows = [n for n in data["neurons"] if n.get("role") == "candidate"][: data["top_k"]]
    rows += [recs.get(tuple(map(int, e.split(":"))), {"layer": int(e.split(":")[0]), "index": int(e.split(":")[1])})
             for e in args.extra]
    print("| # | neuron | role | d [95% CI] | d_layer | mean_pos | mean_neg | importance | var / layer median "
          "| Δ | control Δ | p (Holm) | verdict |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for n in rows:
        l, i = n["layer"], n["index"]
        flat = scanner.offsets[scanner.layers.index(l)] + i
        ratio = float(pooled[flat]) / medians[l]
        a = n.get("ablation") or {}
        ci = n.get("selectivity_ci") or [None, None]
        f = lambda x, nd=3: "—" if x is None else f"{x:.{nd}g}"  # noqa: E731
        print(f"| {n.get('rank', '—')} | {l}:{i} | {n.get('role') or '—'} | {f(n.get('selectivity'))} "
              f"[{f(ci[0])}, {f(ci[1])}] | {f(n.get('selectivity_layer'))} | {f(n.get('mean_pos'))} | "
              f"{f(n.get('mean_neg'))} | {f(n.get('importance'))} | {ratio:.3g} | {f(a.get('delta'))} | "
              f"{f(a.get('delta_control'))} | {f(a.get('p_value'))} ({f(a.get('p_holm'))}) | {a.get('verdict', '—')} |")


if __name__ == "__main__":
    main()
