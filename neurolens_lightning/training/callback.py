"""NeuroLensCallback: run concept probes during fine-tuning and track concept-neuron emergence.

At each probe point (every N training steps, every N epochs, at each checkpoint save and/or
at the end of validation; also at the start and at the end of training unless disabled) the
callback scores each concept on the network being trained (optionally ablating the top-k),
logs scalar summaries through every Lightning logger, logs charts to W&B when a
``WandbLogger`` is attached, and appends a point to the emergence history: the step, the
top-k neurons with their scores, the FDR-significant count per layer, the Jaccard overlap of
the top-k with the previous point, and two ranking-independent measures (mean selectivity of
the k most selective neurons - the emergence headline - and best selectivity per layer). It
also keeps every neuron's scores at every point in a compact form (``store_scores``: bfloat16 /
float16 / int8 tensors, 9 bytes per neuron per point), so that the trajectories of the
*final* top neurons are continuous from the first point, also for neurons that entered the
top-k late (:meth:`emergence` fills them in as each point's ``tracked`` list). At fit end (and
on demand, :meth:`write_reports`) it writes, per concept, the final scan report with the
emergence timeline; the top examples of an image probe given as tensors are inlined there as
PNG thumbnails with their group label (also when the fit stops on an exception or Ctrl-C: the
points measured so far, marked as interrupted). The history is in ``state_dict()``, keyed by the
concept names, so a resumed run continues it, also with another cadence.

It never disturbs training: probes run in eval mode (each module's mode restored) under
``no_grad`` except the importance backward, which takes gradients w.r.t. activations only
(no parameter ``.grad`` is touched); hooks are always removed; the global RNG states
(torch, CUDA, numpy, random) are saved and restored, so dataloader order and dropout masks
are unchanged - a seeded fit ends with bit-identical weights and optimizer state with and
without the callback. A probe can run from any hook: Lightning's ``no_grad`` /
``inference_mode`` contexts are lifted for its importance backward.

Under DDP every rank scores its share of the probe examples and the torchmetrics states are
synced, so every rank holds the same history (= the single-process one); only rank 0 logs
and writes files. The state holds plain data only (ints, floats, strings, lists, dicts and
tensors), so checkpoints load with ``torch.load(..., weights_only=True)``.

Example:
    >>> cb = NeuroLensCallback(["royalty"], every_n_train_steps=50, report_dir="reports/emergence")
    >>> trainer = pl.Trainer(callbacks=[cb])                          # doctest: +SKIP
"""

from __future__ import annotations

import ast
import copy
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import lightning.pytorch as pl
import torch
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.trainer.states import TrainerFn
from lightning.pytorch.utilities import rank_zero_info, rank_zero_only, rank_zero_warn

from neurolens_lightning.adapters import ModelAdapter, adapter_for, family_of
from neurolens_lightning.concepts import Concept, load_concept
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.pipeline import run_scan
from neurolens_lightning.results import ScanResult
from neurolens_lightning.settings import ScanSettings
from neurolens_lightning.steering import dose_response
from neurolens_lightning.training.emergence import EmergenceHistory
from neurolens_lightning.training.modules import gather_rows
from neurolens_lightning.training.reports import log_metrics, log_wandb_charts, probe_metrics, write_reports
from neurolens_lightning.guards import preserved_rng


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


class _OnHistory:
    """A callback attribute that lives on its :class:`EmergenceHistory` (read and assigned there)."""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        return self if obj is None else getattr(obj.emergence_history, self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        setattr(obj.emergence_history, self.name, value)


class NeuroLensCallback(Callback):
    """Concept probes at intervals during training; emergence history in the checkpoint.

    The network is ``pl_module.model`` when that is a supported network (GPT-2, BERT-like,
    torchvision ResNet), else the first supported submodule, else ``model_getter(pl_module)``;
    the tokenizer is ``tokenizer`` or ``pl_module.tokenizer``. The
    :mod:`neurolens_lightning.training.finetune` wrappers follow that layout.

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
        batch_size: probe batch size (default: ``ScanSettings``' 16).
        null_samples: random neurons per layer in the ablation null (default: ``ScanSettings``' 50).
        fdr_q: Benjamini-Hochberg level for the significant-neuron counts.
        probe_at_start: probe the network before the first step (the emergence baseline); skipped when
            a resumed run already has a history.
        probe_at_end: probe the final network at the end of training if the last step was not probed.
        log_charts: log report charts to W&B when a ``WandbLogger`` is attached.
        store_scores: keep every neuron's selectivity, consistency, importance, score and role at every probe
            point (9 bytes per neuron per point, in the checkpoint: e.g. 83 kB per point for MiniLM's 9,216
            neurons, 332 kB for GPT-2's 36,864), so the final top neurons' trajectories are continuous from the
            first point. False: only each point's top-k is kept, and a final top neuron has gaps where it was
            not in that point's top-k.
        settings: a :class:`~neurolens_lightning.settings.ScanSettings` for every probe's scan and causal test
            (split, intervention, null, alpha ...): the same object that drives ``scan()``, eval, steer and
            compare; the arguments above that differ from their defaults override its fields.
        model_name: the network's name in the reports (default: ``pl_module.model_name`` when set, as the
            :mod:`~neurolens_lightning.training.finetune` wrappers do for a registry name, else the Hugging Face
            ``config._name_or_path``, else the class name).

    The history is keyed in the checkpoint by the concept names alone: a fit resumed with another cadence (or
    other reporting options) continues it, also from checkpoints of earlier versions, whose key held the cadence.
    A resume whose probes would not be comparable with the saved points (other ``layers``, ``top_k`` or
    ``importance``) is refused with one line naming the setting. Two NeuroLensCallbacks of one Trainer must probe
    different concept sets (one checkpoint entry each: Lightning refuses duplicate keys when the Trainer is built;
    one callback's cadence options combine). When the fit stops on an exception or Ctrl-C, the reports
    of the points measured so far are written (marked as interrupted at that step) and the exception propagates.

    Probe points never repeat a ``global_step`` and are skipped in the sanity check, under
    ``fast_dev_run`` and outside ``Trainer.fit``. Under ``ddp_spawn`` the callback object of the
    launching process is not updated (the fit runs in child processes): read the history from the
    checkpoint or from ``results.json``.
    """

    #: the emergence history: one point per probe and concept (:mod:`~neurolens_lightning.training.emergence`)
    history = _OnHistory()
    #: per probe point and concept: every neuron's scores as compact tensors (see ``store_scores``)
    score_log = _OnHistory()

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
        batch_size: int | None = None,
        null_samples: int | None = None,
        fdr_q: float = 0.05,
        probe_at_start: bool = True,
        probe_at_end: bool = True,
        log_charts: bool = True,
        store_scores: bool = True,
        steer_scales: Sequence[float] | None = None,
        settings: ScanSettings | None = None,
        model_name: str | None = None,
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
        for name, val, low in (("top_k", top_k, 1), ("ablate_top_k", ablate_top_k, 0),
                               ("batch_size", 1 if batch_size is None else batch_size, 1),
                               ("null_samples", 2 if null_samples is None else null_samples, 2)):
            if not isinstance(val, int) or isinstance(val, bool) or val < low:
                raise NeuroLensError(f"{name} must be an integer >= {low}, got {val!r}")
        # the one settings object of each probe's scan (and causal test): ``settings`` with the arguments above
        # that differ from their defaults applied; ablate_top_k > 0 asks for the causal test of the top k
        over: dict[str, Any] = {"layers": list(layers) if layers is not None else None, "importance": importance,
                                "fdr_q": fdr_q}
        over.update({k: v for k, v in (("batch_size", batch_size), ("null_samples", null_samples)) if v is not None})
        if ablate_top_k > 0:
            over.update(ablate=True, top_k=ablate_top_k)
        self.settings = ScanSettings.resolve(settings, over).check()
        ablate_top_k = self.settings.top_k if self.settings.tests_causally else 0
        layers, importance, fdr_q = self.settings.layers, self.settings.importance, self.settings.fdr_q
        batch_size, null_samples = self.settings.batch_size, self.settings.null_samples
        if not (every_n_train_steps or every_n_epochs or on_checkpoint or on_validation_end):
            every_n_epochs = 1  # default cadence: once per epoch
        self.layers = list(layers) if layers is not None else None
        self.every_n_train_steps, self.every_n_epochs = every_n_train_steps, every_n_epochs
        self.on_checkpoint, self.on_validation_end_ = on_checkpoint, on_validation_end
        self.ablate_top_k, self.report_dir, self.model_getter = ablate_top_k, report_dir, model_getter
        self.tokenizer, self.top_k, self.importance = tokenizer, top_k, importance
        self.batch_size, self.null_samples, self.fdr_q = batch_size, null_samples, fdr_q
        self.probe_at_start, self.probe_at_end, self.log_charts = probe_at_start, probe_at_end, log_charts
        self.store_scores = bool(store_scores)
        if steer_scales is not None and len(steer_scales) < 2:
            raise NeuroLensError(f"steer_scales needs at least 2 scales (e.g. [0, 1, 4]), got {list(steer_scales)}")
        self.steer_scales = [float(v) for v in steer_scales] if steer_scales else None
        #: per concept, the fit-end steering check (steering.json dict) when ``steer_scales`` is set
        self.steering: dict[str, dict[str, Any]] = {}
        #: the probe points and the score log (``history`` and ``score_log`` below are its lists)
        self.emergence_history = EmergenceHistory(top_k, self.store_scores)
        self.last_probe_step: int = -1
        self.last_results: dict[str, ScanResult] = {}
        self.model_name = model_name
        self._adapter: ModelAdapter | None = None
        self._probe_layers: list[int] | None = None  # the layers probed, once setup resolved them
        self._reports_final = False  # the fit-end reports of this fit are written

    # ------------------------------------------------------------------ identity / state
    @property
    def state_key(self) -> str:
        # the concepts only: the history of a concept set is continued by a resumed fit whatever its cadence
        # (probe points never repeat a step, so a cadence change just changes the spacing of the new points)
        return self._generate_state_key(concepts=sorted(c.name for c in self.concepts))

    @property
    def probe_setup(self) -> dict[str, Any]:
        """What makes two probe points comparable: the layers probed (None = all, until ``setup`` resolves them),
        ``top_k`` (the headline's k) and ``importance`` (part of each neuron's score)."""
        return {"layers": self._probe_layers if self._probe_layers is not None else
                (sorted(self.layers) if self.layers is not None else None),
                "top_k": int(self.top_k), "importance": bool(self.importance)}

    def state_dict(self) -> dict[str, Any]:
        # a copy: the checkpoint must not change when later probe points are appended (the stored tensors are
        # never modified in place, so the score log's entries are copied, not its tensors)
        return {"history": copy.deepcopy(self.history), "last_probe_step": int(self.last_probe_step),
                "score_log": [dict(e) for e in self.score_log], "probe_setup": copy.deepcopy(self.probe_setup)}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        history = copy.deepcopy(list(state_dict.get("history", [])))
        self._check_comparable(history, state_dict.get("probe_setup"))
        self.history = history
        self.last_probe_step = int(state_dict.get("last_probe_step", -1))
        # checkpoints written before the score log existed: trajectories fall back to each point's top-k
        self.score_log = [dict(e) for e in state_dict.get("score_log", [])]

    def _check_comparable(self, history: list[dict[str, Any]], saved: dict[str, Any] | None) -> None:
        """Refuse (one line, naming the setting) to continue a history whose points this callback's would not be
        comparable with: other layers, another ``top_k`` or importance on/off. Checkpoints written before the
        setup was saved: the layers and importance are read from the points themselves."""
        if not history:
            return
        saved = dict(saved or {})
        if saved.get("layers") is None:  # the layers each point holds a per-layer summary of
            layers = sorted({int(k) for p in history for k in (p.get("max_selectivity_per_layer") or {})})
            saved["layers"] = layers or None
        if "importance" not in saved:
            vals = [c.get("importance") for p in history for c in p.get("top") or []]
            saved["importance"] = any(v is not None for v in vals) if vals else None
        now = self.probe_setup
        concepts = sorted({str(p.get("concept")) for p in history})
        for key, fix in (("layers", "layers"), ("top_k", "top_k"), ("importance", "importance")):
            a, b = saved.get(key), now[key]
            if key == "layers" and (a is None or b is None):
                continue  # "all layers" of a network not resolved yet: nothing to compare
            if a is not None and a != b:
                raise NeuroLensError(
                    f"cannot continue the emergence history of {concepts} from the checkpoint: its points were probed "
                    f"with {key}={a!r}, this NeuroLensCallback has {key}={b!r}, and points of the two are not "
                    f"comparable; resume with {fix}={a!r}, or start a new history (no ckpt_path, or another "
                    "concept set)")

    def on_load_checkpoint(self, trainer: pl.Trainer, pl_module: pl.LightningModule,
                           checkpoint: dict[str, Any]) -> None:
        """Continue the history also from a checkpoint written under another key: an earlier NeuroLens whose key
        held the cadence (``NeuroLensCallback{'concepts': [...], 'every_n_train_steps': 2, ...}``), or a callback
        of another concept set (the points of the concepts shared are taken). Lightning restores the state of this
        callback's own :attr:`state_key` itself, after this hook."""
        states = checkpoint.get("callbacks") or {}
        if self.state_key in states:
            return
        mine = [c.name for c in self.concepts]
        cands = [(k, st) for k, st in states.items() if isinstance(st, dict) and set(self._key_concepts(k)) & set(mine)]
        if not cands:
            return
        history: list[dict[str, Any]] = []
        score_log: list[dict[str, Any]] = []
        used: dict[str, str] = {}
        last, setups = -1, []
        for name in mine:
            def n_points(item: tuple[Any, dict[str, Any]]) -> int:
                return sum(p.get("concept") == name for p in item[1].get("history") or [])
            # the entry with most points of this concept (several: two callbacks of one concept set that differed
            # in cadence only, under the old key); the first such entry on a tie
            key, st = max(cands, key=n_points)
            if not n_points((key, st)):
                continue
            used[name] = str(key)
            history += [p for p in st.get("history") or [] if p.get("concept") == name]
            score_log += [e for e in st.get("score_log") or [] if e.get("concept") == name]
            last = max(last, int(st.get("last_probe_step", -1)))
            setups.append(st.get("probe_setup"))
        if not used:
            return
        order = {k: i for i, k in enumerate(mine)}
        history.sort(key=lambda p: (int(p["step"]), order[p["concept"]]))
        score_log.sort(key=lambda e: (int(e["step"]), order[e["concept"]]))
        for setup in setups:
            self._check_comparable(history, setup)
        self.load_state_dict({"history": history, "last_probe_step": last, "score_log": score_log,
                              "probe_setup": setups[0] if setups else None})
        fresh = [n for n in mine if n not in used]
        rank_zero_info(f"NeuroLens: emergence history of {sorted(used)} ({len(history)} points) continued from the "
                       f"checkpoint entry {sorted(set(used.values()))}"
                       + (f"; {fresh} have no saved points and start at this run" if fresh else ""))

    @classmethod
    def _key_concepts(cls, key: Any) -> list[str]:
        """The concept names of a NeuroLensCallback checkpoint key (this format or the earlier one, which also held
        the cadence); [] for any other key."""
        prefix = cls.__qualname__ + "{"
        if not isinstance(key, str) or not key.startswith(prefix):
            return []
        try:
            fields = ast.literal_eval(key[len(prefix) - 1:])
        except (ValueError, SyntaxError):
            return []
        names = fields.get("concepts") if isinstance(fields, dict) else None
        return [str(n) for n in names] if isinstance(names, (list, tuple)) else []

    # ------------------------------------------------------------------ setup
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        if stage != "fit":
            return
        self._reports_final = False
        adapter = self._get_adapter(pl_module)
        # layer range checked before training starts; the resolved layers are what a resumed history must match
        self._probe_layers = [int(site.layer) for site in adapter.select_sites(self.layers)]
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
            self._adapter = adapter_for(net, tok, name=self._network_name(pl_module, net))
        return self._adapter

    def _network_name(self, pl_module: pl.LightningModule, net: torch.nn.Module) -> str:
        """The network's name in the reports: ``model_name``, else ``pl_module.model_name`` (a registry name),
        else the Hugging Face ``config._name_or_path``, else the class name."""
        config = getattr(net, "config", None)
        for name in (self.model_name, getattr(pl_module, "model_name", None),
                     getattr(config, "_name_or_path", None) if config is not None else None):
            if isinstance(name, (str, Path)) and str(name).strip():
                return str(name).strip()
        return type(net).__name__

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
        if self.steer_scales and self.last_results and not (trainer.sanity_checking or trainer.fast_dev_run):
            self.steering_check(trainer, pl_module)

    def steering_check(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, dict[str, Any]]:
        """Dose-response of each concept's final validated neurons (else its top-3 candidates) at ``steer_scales``,
        judged against random sets of the same size from the same layers (:func:`~neurolens_lightning.steering.dose_response`).

        Logs ``neurolens/<concept>/steer_beyond_null`` (the verdict, 1/0), ``steer_p_null`` and, descriptive only,
        ``steer_slope`` and ``steer_p_trend``. When the probe ablated (its neurons were validated on the held-out
        half, split 0.5 / seed 0), the steering runs on the other, ranking half: inputs disjoint from those that
        validated them. The report folder gets ``<concept>/steering/steering.{json,html}``. Weights, modes and RNG
        are left as found.
        """
        adapter = self._get_adapter(pl_module)
        concepts = {c.name: c for c in self.concepts}
        metrics: dict[str, float] = {}
        with preserved_rng(), torch.inference_mode(False):
            for name, result in self.last_results.items():
                validated = [k for k, a in result.ablation.items() if a["validated"] and a["direction"] == "drop"]
                neurons = validated or result.top_neurons(3)
                if not neurons:
                    continue
                ablated = self.ablate_top_k > 0 and bool(result.ablation)
                d = dose_response(adapter, concepts[name], neurons, scales=self.steer_scales, n_examples=2,
                                  batch_size=self.batch_size, holdout=0.5, seed=0,
                                  inputs="ranking" if ablated else "heldout", direction=1).to_dict()
                d["source"] = {"callback": "fit end", "which": "validated" if validated else "top candidates",
                               "step": int(trainer.global_step)}
                self.steering[name] = d
                t = d["test"]
                metrics[f"neurolens/{name}/steer_beyond_null"] = float(bool(t["beyond_null"]))
                metrics[f"neurolens/{name}/steer_p_null"] = float(t["p_null"])
                metrics[f"neurolens/{name}/steer_slope"] = float(t["slope_mean"])
                metrics[f"neurolens/{name}/steer_p_trend"] = float(t["p_trend"])
        if metrics:
            log_metrics(trainer, metrics)
        return self.steering

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if self.report_dir and not trainer.fast_dev_run:
            self.write_reports(trainer)
            self._reports_final = True

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        """A fit stopped by an exception or Ctrl-C: write the reports of the points measured so far (rank 0), marked
        as interrupted at this step, with a warning; Lightning re-raises the exception. A failure to write is
        warned about, never raised in place of the exception that stopped the fit."""
        if (not self.report_dir or trainer.fast_dev_run or not self.last_results or self._reports_final
                or trainer.state.fn != TrainerFn.FITTING or not trainer.is_global_zero):
            return
        step = int(trainer.global_step)
        what = type(exception).__name__
        measured = sorted({int(p["step"]) for p in self.history})
        info = {"step": step, "exception": what, "last_probe_step": int(self.last_probe_step)}
        try:
            paths = self.write_reports(trainer, interrupted=info)
        except Exception as e:  # noqa: BLE001 - the exception that stopped the fit is the one to raise
            rank_zero_warn(f"NeuroLens: the fit was interrupted at step {step} ({what}) and its emergence report "
                           f"could not be written: {type(e).__name__}: {e}")
            return
        rank_zero_warn(f"NeuroLens: the fit was interrupted at step {step} ({what}); the emergence report of the "
                       f"{len(measured)} probe points measured up to step {self.last_probe_step} is in "
                       f"{', '.join(str(p) for p in paths)}")

    def teardown(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        # probe hooks are context managers (removed when each pass ends); drop the adapter's model reference
        self._adapter = None

    # ------------------------------------------------------------------ probing
    def probe(self, trainer: pl.Trainer, pl_module: pl.LightningModule, reason: str = "manual") -> list[dict]:
        """Score every concept now; append to and return the new history points. Collective under DDP."""
        adapter = self._get_adapter(pl_module)
        step = int(trainer.global_step)
        world, rank = int(trainer.world_size), int(trainer.global_rank)
        points, results = [], {}
        n_log = len(self.score_log)
        t0 = time.perf_counter()
        # inference_mode(False): a probe called from a hook under the Trainer's inference mode must still be able
        # to take the importance backward (the scanner re-enables grad itself where it needs it)
        try:
            with preserved_rng(), torch.inference_mode(False):
                for concept in self.concepts:
                    result = self._score(adapter, concept, pl_module, rank, world)
                    results[concept.name] = result
                    points.append(self.emergence_history.record(result, step, trainer.current_epoch, reason))
        except BaseException:
            del self.score_log[n_log:]  # a probe interrupted half way adds nothing: history, log, results agree
            raise
        self.last_results.update(results)
        self.last_probe_step = step
        self.emergence_history.extend(points)
        self._log(trainer, points, time.perf_counter() - t0)
        return points

    def _score(self, adapter: ModelAdapter, concept: Concept, pl_module: pl.LightningModule, rank: int,
               world: int) -> ScanResult:
        """One probe point: the pipeline of ``scan()`` with this callback's settings, on the network in training."""
        t0 = time.perf_counter()
        result, _ = run_scan(adapter, concept, self.settings, weights="given", rank=rank, world=world,
                             gather=(lambda t: gather_rows(pl_module, t)) if world > 1 else None)
        result.top_k = max(self.top_k, self.settings.top_k)  # the timeline's head, beyond the tested top-k
        result.timings["total"] = time.perf_counter() - t0
        return result

    # ------------------------------------------------------------------ logging / reports
    @rank_zero_only
    def _log(self, trainer: pl.Trainer, points: list[dict[str, Any]], seconds: float) -> None:
        log_metrics(trainer, probe_metrics(points, seconds))
        if self.log_charts:
            log_wandb_charts(trainer, self.last_results, self.emergence_history.data_with_history)

    def emergence(self, concept: str) -> list[dict[str, Any]]:
        """The history points of ``concept`` (copies), each with ``tracked``: the latest point's top-k neurons
        with their scores at that point (:meth:`EmergenceHistory.emergence
        <neurolens_lightning.training.emergence.EmergenceHistory.emergence>`)."""
        return self.emergence_history.emergence(concept)

    def write_reports(self, trainer: pl.Trainer | None = None, interrupted: dict[str, Any] | None = None
                      ) -> list[Path]:
        """Write, per concept, results.json + report.html (final scan + emergence timeline). Rank 0 only.
        ``interrupted`` (``{"step", "exception", "last_probe_step"}``) marks the reports of a fit that stopped
        early (``results.json["interrupted"]`` and a line on the page)."""
        if trainer is not None and not trainer.is_global_zero:
            return []
        return write_reports(self.last_results, self.emergence_history, self.steering, self.report_dir,
                             interrupted=interrupted)
