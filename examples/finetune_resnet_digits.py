"""Watch a "closed loop" concept emerge while a ResNet-18 learns handwritten digits.

scikit-learn's bundled digits (1,797 8x8 images, no download) are upscaled to 32x32, made
3-channel and split into a training set and a held-out set. The held-out set builds the
visual concept *digits with a closed loop* - 0, 6, 8 and 9 (one consistency group per
digit, so a neuron must fire for every loop digit, not just one) - against the other
digits. A ResNet-18 (random init, or ``--weights`` state dict) is fine-tuned with
:class:`~neurolens_lightning.training.finetune.ImageClassifier`, and
:class:`~neurolens_lightning.training.callback.NeuroLensCallback` probes the concept at regular
steps. The script prints the emergence timeline and how the top neurons' selectivity
moved from the first to the last probe point (the 10 most selective neurons, the top-10 by
composite score, and the best neuron of the last block), and writes the emergence report
(``<report-dir>/closed_loop/results.json`` with an ``emergence`` list, and ``report.html``).

Run::

    python examples/finetune_resnet_digits.py            # ~2-4 min on 2 CPU cores
    python examples/finetune_resnet_digits.py --fast     # smoke test, < 1 min
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any, Sequence

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import QUIET_TRAINER, example_parser, print_report, start  # noqa: E402  (also puts the repo on sys.path)

LOOP_DIGITS = (0, 6, 8, 9)
IMAGE_SIZE = 32
MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def load_digit_images(size: int = IMAGE_SIZE) -> tuple[torch.Tensor, torch.Tensor]:
    """All 1,797 digits as normalized ``[N, 3, size, size]`` images and their labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    x = torch.tensor(d.images, dtype=torch.float32).unsqueeze(1) / 16.0          # [N, 1, 8, 8] in [0, 1]
    x = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    x = ((x.expand(-1, 3, -1, -1) - MEAN) / STD).contiguous()
    return x, torch.tensor(d.target, dtype=torch.long)


def split(labels: torch.Tensor, per_class_heldout: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices (train, held-out) with ``per_class_heldout`` held-out images of every digit."""
    g = torch.Generator().manual_seed(seed)
    train, held = [], []
    for c in range(10):
        idx = (labels == c).nonzero().flatten()
        idx = idx[torch.randperm(len(idx), generator=g)]
        held.append(idx[:per_class_heldout])
        train.append(idx[per_class_heldout:])
    return torch.cat(train).sort().values, torch.cat(held).sort().values


def closed_loop_concept(images: torch.Tensor, labels: torch.Tensor, per_digit: int):
    """The concept: loop digits (groups 0/6/8/9) vs the other six digits, from held-out images."""
    from neurolens_lightning.concepts import Concept

    pos, groups, neg = [], [], []
    for c in range(10):
        idx = (labels == c).nonzero().flatten().tolist()
        if c in LOOP_DIGITS:
            take = idx[:per_digit]
            pos += [images[i] for i in take]
            groups += [f"digit {c}"] * len(take)
        else:
            neg += [images[i] for i in idx[: max(2, (per_digit * len(LOOP_DIGITS)) // 6)]]
    return Concept(name="closed_loop", modality="image", positive=pos, negative=neg, positive_groups=groups,
                   description="Handwritten digits with a closed loop (0, 6, 8, 9) vs digits without one.",
                   source="examples/finetune_resnet_digits.py")


def topk_mean_selectivity(point: dict[str, Any]) -> float:
    vals = [c["selectivity"] for c in point["top"] if c.get("selectivity") is not None]
    return float(sum(vals) / max(1, len(vals)))


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    p = example_parser(__doc__, lr=2e-3, batch_size=64, probe_every=15, report_dir="reports/digits_emergence",
                       fast_help="tiny smoke run (< 1 min): few steps, small concept")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--per-digit", type=int, default=12, help="held-out concept images per loop digit")
    p.add_argument("--weights", default=None, help="optional torchvision ResNet-18 state dict (.pt/.pth)")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    pl = start(args)
    from torch.utils.data import DataLoader, TensorDataset

    from neurolens_lightning.training.callback import NeuroLensCallback
    from neurolens_lightning.training.finetune import ImageClassifier

    images, labels = load_digit_images()
    train_idx, held_idx = split(labels, per_class_heldout=30)
    per_digit = 6 if args.fast else args.per_digit
    concept = closed_loop_concept(images[held_idx], labels[held_idx], per_digit)
    train_ds = TensorDataset(images[train_idx], labels[train_idx])
    val_ds = TensorDataset(images[held_idx], labels[held_idx])
    if args.fast:
        train_ds = torch.utils.data.Subset(train_ds, list(range(0, len(train_ds), 4)))
    loader = DataLoader(train_ds, batch_size=args.batch_size, shuffle=True)
    val_loader = DataLoader(val_ds, batch_size=256)

    module = ImageClassifier("resnet18", num_classes=10, weights=args.weights, lr=args.lr, lr_schedule="cosine")
    every = 2 if args.fast else args.probe_every
    callback = NeuroLensCallback(concept, every_n_train_steps=every, report_dir=args.report_dir, top_k=10,
                                 batch_size=64)
    trainer = pl.Trainer(max_epochs=1 if args.fast else args.epochs, max_steps=6 if args.fast else -1,
                         callbacks=[callback], num_sanity_val_steps=0, limit_val_batches=0 if args.fast else 1.0,
                         **QUIET_TRAINER)
    t0 = time.perf_counter()
    trainer.fit(module, loader, val_loader)
    seconds = time.perf_counter() - t0

    points = callback.history
    first, last = points[0], points[-1]
    deepest = str(max(int(k) for k in last["max_selectivity_per_layer"]))
    print(f"\nclosed-loop concept ({len(concept.positive)} loop digits in groups {concept.group_names}, "
          f"{len(concept.negative)} others); fit {seconds:.1f} s")
    print(f"{'step':>6} {'10 most sel.':>12} {'top-10 score':>12} {'best L' + deepest:>8} {'n_signif':>9} "
          f"{'jaccard':>8}")
    for p in points:
        jac = "-" if p["jaccard_prev"] is None else f"{p['jaccard_prev']:.2f}"
        print(f"{p['step']:>6} {p['most_selective_mean']:>12.2f} {topk_mean_selectivity(p):>12.2f} "
              f"{p['max_selectivity_per_layer'][deepest]:>8.2f} {p['n_significant']:>9} {jac:>8}")
    s0, s1 = first["most_selective_mean"], last["most_selective_mean"]
    print(f"top-10 mean selectivity (the 10 most selective neurons): {s0:.2f} -> {s1:.2f} "
          f"(step {first['step']} -> {last['step']})")
    print(f"top-10 mean selectivity of the top-10 by composite score: {topk_mean_selectivity(first):.2f} -> "
          f"{topk_mean_selectivity(last):.2f}")
    print(f"best selectivity in the last block (layer {deepest}): {first['max_selectivity_per_layer'][deepest]:.2f} -> "
          f"{last['max_selectivity_per_layer'][deepest]:.2f}")
    print(f"FDR-significant neurons: {first['n_significant']} -> {last['n_significant']}")
    if "val_acc" in trainer.callback_metrics:
        print(f"held-out digit accuracy: {float(trainer.callback_metrics['val_acc']):.3f}")
    report, _ = print_report(args.report_dir, concept.name)
    return {"first": s0, "last": s1, "first_by_score": topk_mean_selectivity(first),
            "last_by_score": topk_mean_selectivity(last), "points": len(points), "report": str(report),
            "seconds": seconds}


if __name__ == "__main__":
    main()
