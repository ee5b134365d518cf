"""What :class:`~neurolens_lightning.training.callback.NeuroLensCallback` logs and writes.

* :func:`probe_metrics` - the scalar summary of a probe (``neurolens/<concept>/...``) for every Lightning logger;
* :func:`log_wandb_charts` - the report's charts, logged to every attached ``WandbLogger``;
* :func:`write_reports` - per concept, ``results.json`` + ``report.html`` with the emergence timeline (and the
  steering check's page);
* :func:`image_thumbnail` - an image tensor as a PNG data URI, for the examples of an image probe.
"""

from __future__ import annotations

import base64
import io
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Mapping

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.loggers import WandbLogger
from lightning.pytorch.utilities import rank_zero_info

from neurolens_lightning.report import log_scan_to_wandb
from neurolens_lightning.results import ScanResult
from neurolens_lightning.steering import SteeringResult

if TYPE_CHECKING:  # the history imports image_thumbnail from here
    from neurolens_lightning.training.emergence import EmergenceHistory


def image_thumbnail(x: torch.Tensor, size: int = 64) -> str | None:
    """A ``[3, H, W]`` (or ``[1, H, W]`` / ``[H, W]``) image tensor as a PNG data URI, min-max scaled for display
    (the tensor is the network's normalized input, whatever its normalization); None without PIL."""
    try:
        from PIL import Image  # optional: without Pillow the examples keep no thumbnail
    except ImportError:  # pragma: no cover
        return None
    t = x.detach().float().cpu()
    if t.dim() == 2:
        t = t.unsqueeze(0)
    if t.dim() != 3 or t.shape[0] not in (1, 3):
        return None
    t = torch.nan_to_num(t)
    # per channel: a normalization (x - mean_c) / std_c is affine per channel, so this undoes it up to contrast
    lo = t.amin(dim=(1, 2), keepdim=True)
    span = t.amax(dim=(1, 2), keepdim=True) - lo
    t = torch.where(span > 0, (t - lo) / span.clamp_min(1e-12), torch.zeros_like(t))
    arr = (t.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).numpy()
    grey = arr.shape[2] == 1 or bool((arr == arr[:, :, :1]).all())
    im = Image.fromarray(arr[:, :, 0] if grey else arr)
    im.thumbnail((size, size))
    buf = io.BytesIO()
    im.save(buf, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def probe_metrics(points: list[dict[str, Any]], seconds: float) -> dict[str, float]:
    """The scalars of one probe's history points: per concept ``neurolens/<concept>/n_significant``, the top
    neuron's selectivity and score, the top-k mean, the emergence headline, the Jaccard overlap and the ablation
    counts; and ``neurolens/probe_seconds``."""
    metrics: dict[str, float] = {"neurolens/probe_seconds": seconds}
    for p in points:
        pre = f"neurolens/{p['concept']}"
        metrics[f"{pre}/n_significant"] = float(p["n_significant"])
        sel = [c["selectivity"] for c in p["top"] if c.get("selectivity") is not None]
        if p["top"] and p["top"][0].get("selectivity") is not None:
            metrics[f"{pre}/top_selectivity"] = float(p["top"][0]["selectivity"])
        if p["top"] and p["top"][0].get("score") is not None:
            metrics[f"{pre}/top_score"] = float(p["top"][0]["score"])
        if sel:
            metrics[f"{pre}/mean_topk_selectivity"] = float(np.mean(sel))
        if p.get("most_selective_mean") is not None:
            metrics[f"{pre}/most_selective_mean"] = float(p["most_selective_mean"])
        if p["jaccard_prev"] is not None:
            metrics[f"{pre}/jaccard_prev"] = float(p["jaccard_prev"])
        if "ablation" in p:
            metrics[f"{pre}/n_validated"] = float(p["ablation"]["n_validated"])
            metrics[f"{pre}/n_causal"] = float(p["ablation"].get("n_causal") or 0)
            if p["ablation"].get("joint_beyond_null") is not None:
                metrics[f"{pre}/joint_beyond_null"] = float(p["ablation"]["joint_beyond_null"])
    return metrics


def log_metrics(trainer: pl.Trainer, metrics: Mapping[str, float]) -> None:
    """``metrics`` to every logger of ``trainer``, at its ``global_step``."""
    for logger in trainer.loggers:
        logger.log_metrics(metrics, step=trainer.global_step)


def log_wandb_charts(trainer: pl.Trainer, results: Mapping[str, ScanResult],
                     data_for: Callable[[ScanResult], dict[str, Any]]) -> None:
    """Each concept's report charts (``data_for(result)``: its results dict) to every attached ``WandbLogger``."""
    for logger in trainer.loggers:
        if isinstance(logger, WandbLogger):
            for name, result in results.items():
                log_scan_to_wandb(data_for(result), run=logger.experiment, step=trainer.global_step,
                                  prefix=f"neurolens/{name}", artifact=False)


def write_reports(results: Mapping[str, ScanResult], history: "EmergenceHistory",
                  steering: Mapping[str, dict[str, Any]], report_dir: str | None,
                  interrupted: Mapping[str, Any] | None = None) -> list[Path]:
    """Write, per concept, ``<report_dir>/<concept>/`` results.json + report.html (the final scan with its emergence
    timeline) and, when the steering check ran, ``steering/steering.{json,html}``; returns the folders. Each folder
    is published atomically (:func:`~neurolens_lightning.io.publish`): a reader sees the old files or the new ones.

    ``interrupted`` (``{"step", "exception", "last_probe_step"}``): the fit stopped early; stored as
    ``results.json["interrupted"]`` and said on the page."""
    out = []
    for name, result in results.items():
        result.extra["emergence"] = history.emergence(name)
        if interrupted:
            result.extra["interrupted"] = dict(interrupted)
        else:
            result.extra.pop("interrupted", None)
        if result.concept.modality == "image":  # labelled (and, for tensor examples, inlined) image examples
            result.label_neurons = history.label_examples
        path = Path(report_dir or "reports") / name
        result.save(path)
        if name in steering:
            SteeringResult(steering[name]).save(path / "steering")
        out.append(path)
        rank_zero_info(f"NeuroLens: emergence report for '{name}' written to {path}")
    return out
