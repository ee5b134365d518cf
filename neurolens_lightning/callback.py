"""NeuroLensCallback: run concept probes during fine-tuning and track concept-neuron emergence.

At each probe point (every N training steps, every N epochs, at each checkpoint save and/or
at the end of validation; also at the start and at the end of training unless disabled) the
callback scores each concept on the network being trained (optionally ablating the top-k),
logs scalar summaries through every Lightning logger, logs charts to W&B when a
``WandbLogger`` is attached, and appends a point to the emergence history: the step, the
top-k neurons with their scores, the FDR-significant count per layer, the Jaccard overlap of
the top-k with the previous point, and two ranking-independent measures (mean selectivity of
the k most selective neurons, best selectivity per layer). At fit end (and on demand,
:meth:`write_reports`) it writes, per concept, the final scan report with the emergence
timeline. The history is in ``state_dict()``, so a resumed run continues it.

It never disturbs training: probes run in eval mode (each module's mode restored) under
``no_grad`` except the importance backward, which takes gradients w.r.t. activations only
(no parameter ``.grad`` is touched); hooks are always removed; the global RNG states
(torch, CUDA, numpy, random) are saved and restored, so dataloader order and dropout masks
are unchanged - a seeded fit ends with bit-identical weights and optimizer state with and
without the callback. A probe can run from any hook: Lightning's ``no_grad`` /
``inference_mode`` contexts are lifted for its importance backward.

Under DDP every rank scores its share of the probe examples and the torchmetrics states are
synced, so every rank holds the same history (= the single-process one); only rank 0 logs
and writes files. The history holds plain data only (ints, floats, strings, lists, dicts),
so checkpoints load with ``torch.load(..., weights_only=True)``.

Example:
    >>> cb = NeuroLensCallback(["royalty"], every_n_train_steps=50, report_dir="reports/emergence")
    >>> trainer = pl.Trainer(callbacks=[cb])                          # doctest: +SKIP
"""

from __future__ import annotations

import copy
import random
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
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


def _round(x: Any) -> float | None:
    """A plain, JSON-safe float with 6 significant digits (None for NaN), like the rest of the history."""
    v = float(x)
    return None if v != v else float(f"{v:.6g}")


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
    """Concept probes at intervals during training; emergence history in the checkpoint.

    The network is ``pl_module.model`` when that is a supported network (GPT-2, BERT-like,
    torchvision ResNet), else the first supported submodule, else ``model_getter(pl_module)``;
    the tokenizer is ``tokenizer`` or ``pl_module.tokenizer``. The
    :mod:`neurolens_lightning.finetune` wrappers follow that layout.

    Args:
        concepts: built-in concept names, probe JSON paths, dicts or :class:`Concept` objects.
        layers: layer indices to probe (default: all).
        every_n_train_steps: probe when ``global_step`` is a multiple of N (after the optimizer step).
        every_n_epochs: probe at the end of every N-th training epoch. If no cadence is given at all
            (no steps, epochs, ``on_checkpoint`` or ``on_validation_end``) the callback probes once per epoch.
        on_checkpoint: probe whenever a checkpoint is saved (the point is in that checkpoint).
        on_validation_end: probe at the end of every validation run during fitting.
        ablate_top_k: also validate the top-k neurons causally by ablation on a held-out half of each
            concept (the other half ranks them); 0 = off.
        report_dir: where :meth:`write_reports` writes ``<report_dir>/<concept>/results.json`` and
            ``report.html`` at fit end (rank 0 only); None = no files.
        model_getter: returns the network to probe from the LightningModule.
        tokenizer: the text model's tokenizer (default: ``pl_module.tokenizer``).
        top_k: neurons recorded per probe point.
        importance: compute gradient x activation importance (one extra forward/backward per probe).
        batch_size: probe batch size.
        null_samples: random neurons per layer in the ablation null.
        fdr_q: Benjamini-Hochberg level for the significant-neuron counts.
        probe_at_start: probe the network before the first step (the emergence baseline); skipped when
            a resumed run already has a history.
        probe_at_end: probe the final network at the end of training if the last step was not probed.
        log_charts: log report charts to W&B when a ``WandbLogger`` is attached.

    Probe points never repeat a ``global_step`` and are skipped in the sanity check, under
    ``fast_dev_run`` and outside ``Trainer.fit``. Under ``ddp_spawn`` the callback object of the
    launching process is not updated (the fit runs in child processes): read the history from the
    checkpoint or from ``results.json``.
    """

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
        probe_at_end: bool = True,
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
        for name, val, low in (("top_k", top_k, 1), ("ablate_top_k", ablate_top_k, 0), ("batch_size", batch_size, 1)):
            if not isinstance(val, int) or isinstance(val, bool) or val < low:
                raise NeuroLensError(f"{name} must be an integer >= {low}, got {val!r}")
        if not (every_n_train_steps or every_n_epochs or on_checkpoint or on_validation_end):
            every_n_epochs = 1  # default cadence: once per epoch
        self.layers = list(layers) if layers is not None else None
        self.every_n_train_steps, self.every_n_epochs = every_n_train_steps, every_n_epochs
        self.on_checkpoint, self.on_validation_end_ = on_checkpoint, on_validation_end
        self.ablate_top_k, self.report_dir, self.model_getter = ablate_top_k, report_dir, model_getter
        self.tokenizer, self.top_k, self.importance = tokenizer, top_k, importance
        self.batch_size, self.null_samples, self.fdr_q = batch_size, null_samples, fdr_q
        self.probe_at_start, self.probe_at_end, self.log_charts = probe_at_start, probe_at_end, log_charts
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
        # a copy: the checkpoint must not change when later probe points are appended
        return {"history": copy.deepcopy(self.history), "last_probe_step": int(self.last_probe_step)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = copy.deepcopy(list(state_dict.get("history", [])))
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
            if self.ablate_top_k > 0:
                c.split(0.5, seed=0)  # raises now, not at the first probe point, if the concept is too small

    def _get_adapter(self, pl_module: pl.LightningModule) -> ModelAdapter:
        net = self.model_getter(pl_module) if self.model_getter else find_network(pl_module)
        if self._adapter is None or self._adapter.model is not net:
            tok = self.tokenizer if self.tokenizer is not None else getattr(pl_module, "tokenizer", None)
            self._adapter = adapter_for(net, tok, name=type(net).__name__)
        return self._adapter

    # ------------------------------------------------------------------ cadence
    def _should_skip(self, trainer: pl.Trainer) -> bool:
        """Mirror of ``ModelCheckpoint._should_skip_saving_checkpoint``: no probe outside fitting, in the
        sanity check, under ``fast_dev_run``, or twice at the same ``global_step``."""
        return bool(trainer.fast_dev_run or trainer.state.fn != TrainerFn.FITTING or trainer.sanity_checking
                    or trainer.global_step == self.last_probe_step)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.probe_at_start and not self.history and not self._should_skip(trainer):
            self.probe(trainer, pl_module, reason="start")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        n = self.every_n_train_steps
        # global_step > 0: with gradient accumulation the first micro-batches end at step 0 (that is the start probe)
        if n and trainer.global_step > 0 and trainer.global_step % n == 0 and not self._should_skip(trainer):
            self.probe(trainer, pl_module, reason="step")

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        n = self.every_n_epochs
        if n and (trainer.current_epoch + 1) % n == 0 and not self._should_skip(trainer):
            self.probe(trainer, pl_module, reason="epoch")

    def on_validation_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.on_validation_end_ and not self._should_skip(trainer):
            self.probe(trainer, pl_module, reason="validation")

    def on_save_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        if self.on_checkpoint and not self._should_skip(trainer):
            self.probe(trainer, pl_module, reason="checkpoint")
            checkpoint.setdefault("callbacks", {})[self.state_key] = self.state_dict()

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # the final model gets a point, so the report's "final scan" is the trained network (collective:
        # every rank runs on_train_end, before the strategy tears down)
        if self.probe_at_end and not self._should_skip(trainer):
            self.probe(trainer, pl_module, reason="end")

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.report_dir and not trainer.fast_dev_run:
            self.write_reports(trainer)

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # probe hooks are context managers (removed when each pass ends); drop the adapter's model reference
        self._adapter = None

    # ------------------------------------------------------------------ probing
    def probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule, reason: str = "manual") -> list[dict]:
        """Score every concept now; append to and return the new history points. Collective under DDP."""
        adapter = self._get_adapter(pl_module)
        step = int(trainer.global_step)
        world, rank = int(trainer.world_size), int(trainer.global_rank)
        points = []
        t0 = time.perf_counter()
        # inference_mode(False): a probe called from a hook under the Trainer's inference mode must still be able
        # to take the importance backward (the scanner re-enables grad itself where it needs it)
        with _RNGState(), torch.inference_mode(False):
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
                                 importance=self.importance, rank=rank, world_size=world, fdr_q=self.fdr_q)
        scanner.run_activation_pass()
        if self.importance:
            scanner.run_importance_pass(gather=(lambda t: gather_rows(pl_module, t)) if world > 1 else None)
        scores = scanner.compute()
        result = ScanResult(model=adapter.describe(), concept=rank_concept, layers=scanner.layers,
                            units=[s.units for s in scanner.sites], scores=scores,
                            top_k=max(self.top_k, self.ablate_top_k), fdr_q=self.fdr_q,
                            settings={"importance": self.importance, "device": str(adapter.device),
                                      "pooling": scanner.pooling},
                            warnings=[scanner.pooling_warning] if scanner.pooling_warning else [])
        if self.ablate_top_k > 0 and held_out is not None:
            from neurolens_lightning.ablation import run_ablation

            result.top_k = self.ablate_top_k
            run_ablation(result, adapter, scanner, held_out, null_samples=self.null_samples,
                         batch_size=self.batch_size)
            result.top_k = max(self.top_k, self.ablate_top_k)
        return result

    def _point(self, result: ScanResult, step: int, epoch: int, reason: str) -> dict[str, Any]:
        # the head of the ranking (candidates first), each with its role: the timeline stays continuous
        # from random init, where few neurons qualify as candidates yet
        top = result.ranked(self.top_k)
        d = torch.nan_to_num(result.scores.selectivity.double(), nan=0.0)
        prev = next((p for p in reversed(self.history) if p["concept"] == result.concept.name), None)
        cur_set = {(c["layer"], c["index"]) for c in top}
        jaccard = None
        if prev is not None:
            prev_set = {(c["layer"], c["index"]) for c in prev["top"]}
            jaccard = len(cur_set & prev_set) / max(1, len(cur_set | prev_set))
        layers = result.layer_summary()
        point: dict[str, Any] = {
            "step": step, "epoch": int(epoch), "reason": reason, "concept": result.concept.name,
            "top": [{k: c[k] for k in ("layer", "index", "role", "selectivity", "selectivity_p", "consistency",
                                       "importance", "score")} for c in top],
            "n_significant": result.n_significant_fdr,
            "n_candidates": result.scores.n_candidates,
            "n_significant_per_layer": {str(s["layer"]): s["n_significant"] for s in layers},
            "jaccard_prev": jaccard,
            # ranking-independent emergence measures: the k most selective neurons, and the best per layer
            "most_selective_mean": _round(torch.topk(d, min(self.top_k, d.numel())).values.mean()),
            "max_selectivity_per_layer": {str(s["layer"]): s["max_selectivity"] for s in layers},
        }
        if result.ablation_summary is not None:
            point["ablation"] = {"n_validated": result.ablation_summary["n_validated"],
                                 "n_tested": result.ablation_summary["n_candidates"],
                                 "joint_delta": result.ablation_summary["joint_delta"]}
        return point

    # ------------------------------------------------------------------ logging / reports
    @rank_zero_only
    def _log(self, trainer: pl.Trainer, points: list[dict[str, Any]], seconds: float) -> None:
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

