"""NeuroLensCallback: run concept probes during fine-tuning and track concept-neuron emergence.

At each probe point (every N training steps, every N epochs, at each checkpoint save and/or
at the end of validation) the callback scores each concept on the network being trained
(optionally ablating the top-k), logs scalar summaries through every Lightning logger,
logs charts to W&B when a ``WandbLogger`` is attached, and appends a point to the
emergence history: the step, the top-k neurons with their scores, the FDR-significant
count per layer and the Jaccard overlap of the top-k with the previous point. At fit end
(and on demand, :meth:`write_reports`) it writes, per concept, the final scan report with
the emergence timeline. The history is in ``state_dict()``, so a resumed run continues it.

It never disturbs training: probes run in eval mode (each module's mode restored) under
``no_grad`` except the importance backward, which takes gradients w.r.t. activations only
(no parameter ``.grad`` is touched); hooks are always removed; the global RNG states
(torch, CUDA, numpy, random) are saved and restored, so dataloader order and dropout masks
are unchanged.

Example:
    >>> cb = NeuroLensCallback(["royalty"], every_n_train_steps=50, report_dir="reports/emergence")
    >>> trainer = pl.Trainer(callbacks=[cb])                          # doctest: +SKIP
"""

from __future__ import annotations

import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only

from neurolens_lightning.adapters import ModelAdapter, adapter_for, family_of
from neurolens_lightning.concepts import Concept, load_concept
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.modules import gather_rows
from neurolens_lightning.results import ScanResult
from neurolens_lightning.scanner import ConceptScanner


def find_network(pl_module: pl.LightningModule) -> torch.nn.Module:
    """``pl_module.model`` if it is a supported network, else the first supported submodule."""
    cand = getattr(pl_module, "model", None)
    if isinstance(cand, torch.nn.Module) and family_of(cand) is not None:
        return cand
    for _, m in pl_module.named_modules():
        if family_of(m) is not None:
            return m
    raise NeuroLensError(f"{type(pl_module).__name__} contains no supported network (GPT-2, BERT-like, ResNet); "
                         "store it as `self.model` or pass model_getter=lambda m: m.<attr>")


class _RNGState:
    """Save and restore every global RNG the training loop may depend on."""

    def __enter__(self) -> "_RNGState":
        self.torch = torch.get_rng_state()
        self.cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None
        self.np = np.random.get_state()
        self.py = random.getstate()
        return self

    def __exit__(self, *exc: Any) -> None:
        torch.set_rng_state(self.torch)
        if self.cuda is not None:
            torch.cuda.set_rng_state_all(self.cuda)
        np.random.set_state(self.np)
        random.setstate(self.py)


class NeuroLensCallback(Callback):
    """Concept probes at intervals during training; emergence history in the checkpoint."""

    def __init__(
        self,
        concepts: "str | Concept | Sequence[str | Concept]" = "royalty",
        layers: Sequence[int] | None = None,
        every_n_train_steps: int | None = None,
        every_n_epochs: int | None = None,
        on_checkpoint: bool = False,
        on_validation_end: bool = False,
        ablate_top_k: int = 0,
        report_dir: str | None = None,
        model_getter: Callable[[pl.LightningModule], torch.nn.Module] | None = None,
        tokenizer: Any = None,
        top_k: int = 10,
        importance: bool = True,
        batch_size: int = 32,
        null_samples: int = 20,
        fdr_q: float = 0.05,
        probe_at_start: bool = True,
        log_charts: bool = True,
    ) -> None:
        super().__init__()
        items = [concepts] if isinstance(concepts, (str, Concept, dict, Path)) else list(concepts)
        if not items:
            raise NeuroLensError("NeuroLensCallback needs at least one concept")
        self.concepts: list[Concept] = [load_concept(c) for c in items]
        names = [c.name for c in self.concepts]
        if len(set(names)) != len(names):
            raise NeuroLensError(f"concept names must be unique, got {names}")
        for name, val in (("every_n_train_steps", every_n_train_steps), ("every_n_epochs", every_n_epochs)):
            if val is not None and (not isinstance(val, int) or val < 1):
                raise NeuroLensError(f"{name} must be a positive integer or None, got {val!r}")
        if not (every_n_train_steps or every_n_epochs or on_checkpoint or on_validation_end):
            every_n_epochs = 1  # default cadence: once per epoch
        self.layers = list(layers) if layers is not None else None
        self.every_n_train_steps, self.every_n_epochs = every_n_train_steps, every_n_epochs
        self.on_checkpoint, self.on_validation_end_ = on_checkpoint, on_validation_end
        self.ablate_top_k, self.report_dir, self.model_getter = ablate_top_k, report_dir, model_getter
        self.tokenizer, self.top_k, self.importance = tokenizer, top_k, importance
        self.batch_size, self.null_samples, self.fdr_q = batch_size, null_samples, fdr_q
        self.probe_at_start, self.log_charts = probe_at_start, log_charts
        self.history: list[dict[str, Any]] = []
        self.last_probe_step: int = -1
        self.last_results: dict[str, ScanResult] = {}
        self._adapter: ModelAdapter | None = None

    # ------------------------------------------------------------------ identity / state
    @property
    def state_key(self) -> str:
        return self._generate_state_key(concepts=[c.name for c in self.concepts],
                                        every_n_train_steps=self.every_n_train_steps,
                                        every_n_epochs=self.every_n_epochs)

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "last_probe_step": self.last_probe_step}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = list(state_dict.get("history", []))
        self.last_probe_step = int(state_dict.get("last_probe_step", -1))

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        adapter = self._get_adapter(pl_module)
        adapter.select_sites(self.layers)  # layer range checked before training starts
        for c in self.concepts:
            if c.modality != adapter.modality:
                raise NeuroLensError(f"concept {c.name!r} is a {c.modality} probe but the network is a "
                                     f"{adapter.modality} model")

    def _get_adapter(self, pl_module: pl.LightningModule) -> ModelAdapter:
        net = self.model_getter(pl_module) if self.model_getter else find_network(pl_module)
        if self._adapter is None or self._adapter.model is not net:
            tok = self.tokenizer if self.tokenizer is not None else getattr(pl_module, "tokenizer", None)
            self._adapter = adapter_for(net, tok, name=type(net).__name__)
        return self._adapter

    # ------------------------------------------------------------------ cadence
    def _should_skip(self, trainer: pl.Trainer) -> bool:
        return bool(trainer.sanity_checking or trainer.fast_dev_run or trainer.global_step == self.last_probe_step)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.probe_at_start and not self.history and not self._should_skip(trainer):
            self.probe(trainer, pl_module, reason="start")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = self.every_n_train_steps
        if n and trainer.global_step % n == 0 and not self._should_skip(trainer):
            self.probe(trainer, pl_module, reason="step")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        n = self.every_n_epochs
        if n and (trainer.current_epoch + 1) % n == 0 and not self._should_skip(trainer):
            self.probe(trainer, pl_module, reason="epoch")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.on_validation_end_ and trainer.state.fn == "fit" and not self._should_skip(trainer):
            self.probe(trainer, pl_module, reason="validation")

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if self.on_checkpoint and not self._should_skip(trainer):
            self.probe(trainer, pl_module, reason="checkpoint")
            checkpoint.setdefault("callbacks", {})[self.state_key] = self.state_dict()

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.report_dir and not trainer.fast_dev_run:
            self.write_reports(trainer)

    # ------------------------------------------------------------------ probing
    def probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule, reason: str = "manual") -> list[dict]:
        """Score every concept now; append to and return the new history points. Collective under DDP."""
        adapter = self._get_adapter(pl_module)
        step = int(trainer.global_step)
        world, rank = int(trainer.world_size), int(trainer.global_rank)
        points = []
        t0 = time.perf_counter()
        with _RNGState():
            for concept in self.concepts:
                result = self._score(adapter, concept, pl_module, rank, world)
                self.last_results[concept.name] = result
                points.append(self._point(result, step, trainer.current_epoch, reason))
        self.last_probe_step = step
        self.history.extend(points)
        self._log(trainer, points, time.perf_counter() - t0)
        return points

    def _score(self, adapter: ModelAdapter, concept: Concept, pl_module: pl.LightningModule, rank: int,
               world: int) -> ScanResult:
        rank_concept, held_out = concept, None
        if self.ablate_top_k > 0:
            rank_concept, held_out = concept.split(0.5, seed=0)
        scanner = ConceptScanner(adapter, rank_concept, self.layers, batch_size=self.batch_size,
                                 importance=self.importance, rank=rank, world_size=world)
        scanner.run_activation_pass()
        if self.importance:
            scanner.run_importance_pass(gather=(lambda t: gather_rows(pl_module, t)) if world > 1 else None)
        scores = scanner.compute()
        result = ScanResult(model=adapter.describe(), concept=rank_concept, layers=scanner.layers,
                            units=[s.units for s in scanner.sites], scores=scores,
                            top_k=max(self.top_k, self.ablate_top_k), fdr_q=self.fdr_q,
                            settings={"importance": self.importance, "device": str(adapter.device)})
        if self.ablate_top_k > 0 and held_out is not None:
            from neurolens_lightning.ablation import run_ablation

            result.top_k = self.ablate_top_k
            run_ablation(result, adapter, scanner, held_out, null_samples=self.null_samples,
                         batch_size=self.batch_size)
            result.top_k = max(self.top_k, self.ablate_top_k)
        return result

    def _point(self, result: ScanResult, step: int, epoch: int, reason: str) -> dict[str, Any]:
        top = result.candidates(self.top_k)
        prev = next((p for p in reversed(self.history) if p["concept"] == result.concept.name), None)
        cur_set = {(c["layer"], c["index"]) for c in top}
        jaccard = None
        if prev is not None:
            prev_set = {(c["layer"], c["index"]) for c in prev["top"]}
            jaccard = len(cur_set & prev_set) / max(1, len(cur_set | prev_set))
        point: dict[str, Any] = {
            "step": step, "epoch": int(epoch), "reason": reason, "concept": result.concept.name,
            "top": [{k: c[k] for k in ("layer", "index", "selectivity", "selectivity_p", "consistency",
                                       "importance", "score")} for c in top],
            "n_significant": result.n_significant_fdr,
            "n_significant_per_layer": {str(s["layer"]): s["n_significant"] for s in result.layer_summary()},
            "jaccard_prev": jaccard,
        }
        if result.ablation_summary is not None:
            point["ablation"] = {"n_validated": result.ablation_summary["n_validated"],
                                 "joint_delta": result.ablation_summary["joint_delta"]}
        return point

    # ------------------------------------------------------------------ logging / reports
    @rank_zero_only
    def _log(self, trainer: pl.Trainer, points: list[dict[str, Any]], seconds: float) -> None:
        metrics: dict[str, float] = {"neurolens/probe_seconds": seconds}
        for p in points:
            pre = f"neurolens/{p['concept']}"
            metrics[f"{pre}/n_significant"] = float(p["n_significant"])
            if p["top"]:
                metrics[f"{pre}/top_selectivity"] = float(p["top"][0]["selectivity"])
                metrics[f"{pre}/top_score"] = float(p["top"][0]["score"])
                metrics[f"{pre}/mean_topk_selectivity"] = float(np.mean([c["selectivity"] for c in p["top"]]))
            if p["jaccard_prev"] is not None:
                metrics[f"{pre}/jaccard_prev"] = float(p["jaccard_prev"])
            if "ablation" in p:
                metrics[f"{pre}/n_validated"] = float(p["ablation"]["n_validated"])
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        if self.log_charts:
            self._log_wandb_charts(trainer)

    def _log_wandb_charts(self, trainer: pl.Trainer) -> None:
        try:
            from lightning.pytorch.loggers import WandbLogger
        except ImportError:  # pragma: no cover
            return
        for logger in trainer.loggers:
            if isinstance(logger, WandbLogger):
                try:
                    from neurolens_lightning.report import log_scan_to_wandb
                except ImportError:  # pragma: no cover - report module missing
                    return
                for name, result in self.last_results.items():
                    data = self._data_with_history(result)
                    log_scan_to_wandb(data, run=logger.experiment, step=trainer.global_step,
                                      prefix=f"neurolens/{name}", artifact=False)

    def _data_with_history(self, result: ScanResult) -> dict[str, Any]:
        data = result.to_dict()
        data["emergence"] = [p for p in self.history if p["concept"] == result.concept.name]
        return data

    def write_reports(self, trainer: pl.Trainer | None = None) -> list[Path]:
        """Write, per concept, results.json + report.html (final scan + emergence timeline). Rank 0 only."""
        if trainer is not None and not trainer.is_global_zero:
            return []
        out = []
        for name, result in self.last_results.items():
            result.extra["emergence"] = [p for p in self.history if p["concept"] == name]
            path = Path(self.report_dir or "reports") / name
            result.save(path)
            out.append(path)
            rank_zero_info(f"NeuroLens: emergence report for '{name}' written to {path}")
        return out

