"""Training-time overhead of NeuroLensCallback at its default settings, on the digits example.

The fit of ``examples/finetune_resnet_digits.py`` (ResNet-18, random init, scikit-learn digits at
32x32, train + validation loaders) is timed with and without
``NeuroLensCallback(closed_loop_concept, report_dir=...)`` - the defaults: one probe per epoch
(+ one at the start), importance on, no ablation, the report written at fit end. Both variants
run side by side in one process, alternating which goes first, from the same seed; the ratio of
the medians is printed (target <= 1.10), for wall time and for process CPU time (the latter is
less sensitive to other processes on a shared machine).

    python benchmarks/bench_callback.py [--epochs 8] [--repeats 2] [--threads 1]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "examples"))

from finetune_resnet_digits import closed_loop_concept, load_digit_images, split  # noqa: E402
from finetune_resnet_digits import parse_args as example_args  # noqa: E402


def fit_once(with_callback: bool, data: dict, epochs: int, report_dir: str, seed: int = 0) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, probe points) of one fit."""
    import lightning.pytorch as pl
    from torch.utils.data import DataLoader

    from neurolens_lightning.training.callback import NeuroLensCallback
    from neurolens_lightning.training.finetune import ImageClassifier

    pl.seed_everything(seed, verbose=False)
    module = ImageClassifier("resnet18", num_classes=10, lr=2e-3, lr_schedule="cosine")  # as in the example
    callbacks = [NeuroLensCallback(data["concept"], report_dir=report_dir)] if with_callback else []
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, num_sanity_val_steps=0,
                         callbacks=callbacks)
    train = DataLoader(data["train"], batch_size=64, shuffle=True)
    val = DataLoader(data["val"], batch_size=256)
    w0, c0 = time.perf_counter(), time.process_time()
    trainer.fit(module, train, val)
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return wall, cpu, len(callbacks[0].history) if callbacks else 0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--epochs", type=int, default=example_args([]).epochs, help="default: the example's (8)")
    p.add_argument("--repeats", type=int, default=2, help="pairs of fits (with/without), alternating order")
    p.add_argument("--threads", type=int, default=1, help="torch threads (1 is the most stable on a shared box)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    from torch.utils.data import TensorDataset

    images, labels = load_digit_images()
    train_idx, held_idx = split(labels, per_class_heldout=30)
    data = {"train": TensorDataset(images[train_idx], labels[train_idx]),
            "val": TensorDataset(images[held_idx], labels[held_idx]),
            "concept": closed_loop_concept(images[held_idx], labels[held_idx], per_digit=12)}
    c = data["concept"]
    print(f"digits example: {len(data['train'])} training images (32x32), ResNet-18, {args.epochs} epochs; concept "
          f"'{c.name}' {len(c.positive)} positives / {len(c.negative)} negatives; torch threads {args.threads}")
    fit_once(False, data, 1, "")  # warm-up (allocator, lazy imports)
    times: dict[bool, list[tuple[float, float]]] = {True: [], False: []}
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.repeats):
            order = (False, True) if r % 2 == 0 else (True, False)
            for with_cb in order:
                wall, cpu, points = fit_once(with_cb, data, args.epochs, str(Path(tmp) / f"r{r}"))
                times[with_cb].append((wall, cpu))
                print(f"  repeat {r}: {'with   ' if with_cb else 'without'} callback: {wall:6.1f} s wall, "
                      f"{cpu:6.1f} s CPU" + (f" ({points} probe points)" if with_cb else ""))
    med = {k: (statistics.median(w for w, _ in v), statistics.median(c for _, c in v)) for k, v in times.items()}
    print(f"fit time without callback: {med[False][0]:.1f} s wall / {med[False][1]:.1f} s CPU (median)")
    print(f"fit time with callback:    {med[True][0]:.1f} s wall / {med[True][1]:.1f} s CPU (median)")
    print(f"ratio with / without: {med[True][0] / med[False][0]:.3f} wall, {med[True][1] / med[False][1]:.3f} CPU "
          f"(target <= 1.10)")


if __name__ == "__main__":
    main()
