"""Track the built-in "negation" concept while MiniLM learns negation-sensitive sentiment.

``examples/data/sentiment_negation.jsonl`` ships 200 short sentences labelled positive (1) or
negative (0); half of them are negated ("The soup was not bland at all." is positive), so the
classifier has to read the negation to get them right. The real all-MiniLM-L6-v2 encoder
(``neurolens_lightning.load_model("minilm")``, offline) is fine-tuned with
:class:`~neurolens_lightning.training.finetune.TextClassifier` (mean-pooled encoder + linear head) and
:class:`~neurolens_lightning.training.callback.NeuroLensCallback` probes the built-in ``negation``
concept (six groups: not / never / no-none / contractions / nobody-nothing / neither-nor)
at regular steps. The script prints the timeline - selectivity, importance and
FDR-significant counts - and the accuracy on negated vs plain held-out
sentences, and writes the emergence report (``<report-dir>/negation``).

Run::

    python examples/finetune_minilm_negation.py           # ~2-3 min on 2 CPU cores
    python examples/finetune_minilm_negation.py --fast    # smoke test, < 1 min
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import QUIET_TRAINER, example_parser, print_report, start  # noqa: E402  (also puts the repo on sys.path)

DATA = Path(__file__).resolve().parent / "data" / "sentiment_negation.jsonl"


def load_rows(path: Path = DATA) -> list[dict[str, Any]]:
    """The labelled sentences: ``{"text", "label", "negated"}`` per line."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def split_rows(rows: list[dict[str, Any]], val_fraction: float = 0.2, seed: int = 0
               ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """A split stratified by (label, negated)."""
    g = torch.Generator().manual_seed(seed)
    train, val = [], []
    for key in sorted({(r["label"], r["negated"]) for r in rows}):
        part = [r for r in rows if (r["label"], r["negated"]) == key]
        order = torch.randperm(len(part), generator=g).tolist()
        n_val = int(round(len(part) * val_fraction))
        val += [part[i] for i in order[:n_val]]
        train += [part[i] for i in order[n_val:]]
    return train, val


@torch.no_grad()
def accuracy(module: Any, rows: list[dict[str, Any]]) -> tuple[float, float]:
    """Accuracy on the negated and on the plain sentences of ``rows``."""
    was = module.training
    module.eval()
    out = []
    for negated in (True, False):
        part = [r for r in rows if r["negated"] == negated]
        batch = module.collate(part)
        logits = module(batch["input_ids"], batch["attention_mask"], batch.get("token_type_ids"))
        out.append(float((logits.argmax(-1) == batch["labels"]).float().mean()))
    module.train(was)
    return out[0], out[1]


def summarize(point: dict[str, Any]) -> dict[str, float]:
    top = point["top"]
    mean = lambda key: sum(abs(c[key] or 0.0) for c in top) / max(1, len(top))  # noqa: E731
    return {"sel": sum(c["selectivity"] or 0.0 for c in top) / max(1, len(top)), "imp": mean("importance"),
            "score": sum(c["score"] or 0.0 for c in top) / max(1, len(top))}


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = example_parser(__doc__, lr=1e-4, batch_size=16, probe_every=10, report_dir="reports/minilm_negation")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--layers", type=int, nargs="*", default=None, help="MiniLM layers to probe (default: all 6)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    pl = start(args)
    from torch.utils.data import DataLoader

    from neurolens_lightning.training.callback import NeuroLensCallback
    from neurolens_lightning.training.finetune import TextClassifier

    train, val = split_rows(load_rows())
    module = TextClassifier("minilm", num_labels=2, lr=args.lr, lr_schedule="cosine", max_length=32)
    loader = DataLoader(train, batch_size=args.batch_size, shuffle=True, collate_fn=module.collate)
    before = accuracy(module, val)

    layers = args.layers if args.layers else ([4, 5] if args.fast else None)
    callback = NeuroLensCallback("negation", layers=layers, every_n_train_steps=4 if args.fast else args.probe_every,
                                 report_dir=args.report_dir, top_k=10, batch_size=32)
    trainer = pl.Trainer(max_epochs=args.epochs, max_steps=4 if args.fast else -1, callbacks=[callback],
                         **QUIET_TRAINER)
    t0 = time.perf_counter()
    trainer.fit(module, loader)
    seconds = time.perf_counter() - t0
    after = accuracy(module, val)

    points = callback.history
    print(f"\nnegation concept, MiniLM fine-tuned on {len(train)} sentences ({seconds:.1f} s)")
    print(f"{'step':>5} {'10 most sel.':>12} {'top-10 sel':>10} {'|importance|':>12} {'score':>7} {'n_signif':>9} "
          f"{'jaccard':>8}")
    for p in points:
        s = summarize(p)
        jac = "-" if p["jaccard_prev"] is None else f"{p['jaccard_prev']:.2f}"
        print(f"{p['step']:>5} {p['most_selective_mean']:>12.2f} {s['sel']:>10.2f} {s['imp']:>12.4f} "
              f"{s['score']:>7.3f} {p['n_significant']:>9} {jac:>8}")
    s0, s1 = summarize(points[0]), summarize(points[-1])
    print(f"top-10 mean selectivity: {points[0]['most_selective_mean']:.2f} -> {points[-1]['most_selective_mean']:.2f} "
          f"(10 most selective neurons), {s0['sel']:.2f} -> {s1['sel']:.2f} (top-10 by composite score)")
    print(f"mean |importance| of the top-10: {s0['imp']:.4f} -> {s1['imp']:.4f}; FDR-significant neurons: "
          f"{points[0]['n_significant']} -> {points[-1]['n_significant']}")
    print(f"held-out accuracy, negated sentences: {before[0]:.2f} -> {after[0]:.2f}; plain: {before[1]:.2f} -> "
          f"{after[1]:.2f}")
    final = points[-1]["top"][:3]
    print("final top neurons: " + ", ".join(f"L{c['layer']}:{c['index']} (sel {c['selectivity']:.2f})"
                                            for c in final))
    report, _ = print_report(args.report_dir, "negation")
    return {"first": s0, "last": s1, "points": len(points), "report": str(report), "seconds": seconds,
            "accuracy_before": before, "accuracy_after": after}


if __name__ == "__main__":
    main()
