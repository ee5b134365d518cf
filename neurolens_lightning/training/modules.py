"""Lightning wrappers: scoring and ablation as ``trainer.validate`` runs.

* :class:`ConceptDataModule` — a concept's examples as validation dataloaders (activation
  pass, then confidence inputs for importance; or, where the scanner can fuse, the one
  dataloader of the fused pass), sharded across ranks without padding.
* :class:`ProbeModule` — accumulates Selectivity / Consistency / Importance as torchmetrics
  in ``validation_step`` and logs headline scalars at epoch end; ``module.result`` is the
  ranked :class:`~neurolens_lightning.results.ScanResult`.
* :class:`AblationModule` — the causal validation loop (DESIGN §3) as ``validation_step``
  over held-out concept and control inputs, logging per-candidate Δ / validated.

Importance needs gradients: run ``Trainer(inference_mode=False)`` when it is enabled.

Example:
    >>> import lightning.pytorch as pl
    >>> module = ProbeModule("minilm", "royalty", layers=[4, 5])            # doctest: +SKIP
    >>> pl.Trainer(inference_mode=False, logger=False).validate(module, datamodule=module.datamodule())  # doctest: +SKIP
    >>> module.result.candidates(3)                                          # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any, Iterator, Sequence

import lightning.pytorch as pl
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from neurolens_lightning.ablation import (ablation_inputs, chunk_generator, encode_chunk, finish_ablation, make_runner,
                                          plan_ablation)
from neurolens_lightning.ablation.loop import announce_ablation
from neurolens_lightning.adapters import ModelAdapter
from neurolens_lightning.concepts import Concept, load_concept
from neurolens_lightning.distributed import gather_cat
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.registry import load_model
from neurolens_lightning.results import ScanResult
from neurolens_lightning.pipeline import SAME_EXAMPLES, build_result, check_for_model, make_scanner
from neurolens_lightning.scanner import ConceptScanner
from neurolens_lightning.scanner_fused import FusedBatch
from neurolens_lightning.settings import ScanSettings


class _Indices(Dataset):
    def __init__(self, n: int) -> None:
        self.n = n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> int:
        return i


class ShardSampler(DistributedSampler):
    """Contiguous-free, padding-free sharding: rank r gets indices r, r+W, ... (no duplicates,
    unlike the default DistributedSampler, which pads and would double-count examples)."""

    def __init__(self, dataset: Dataset, num_replicas: int | None = None, rank: int | None = None) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=False, drop_last=False)

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, len(self.dataset), self.num_replicas))

    def __len__(self) -> int:
        return len(range(self.rank, len(self.dataset), self.num_replicas))


class EveryRankSampler(DistributedSampler):
    """Every index on every rank, in order: for loops that shard their *work* rather than their inputs (the
    ablation loop gives each rank a share of the ablation jobs over all inputs). Being a DistributedSampler,
    Lightning keeps it instead of inserting its own (which would split and pad the inputs)."""

    def __init__(self, dataset: Dataset) -> None:
        super().__init__(dataset, num_replicas=1, rank=0, shuffle=False, drop_last=False)

    def __iter__(self) -> Iterator[int]:
        return iter(range(len(self.dataset)))

    def __len__(self) -> int:
        return len(self.dataset)


def _sampler(ds: Dataset) -> Any:
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return ShardSampler(ds)
    return None


class ConceptDataModule(pl.LightningDataModule):
    """Validation dataloaders over a concept: 0 = every probe example (activations), 1 = confidence inputs.

    Where the scanner can fuse its passes (:meth:`~neurolens_lightning.scanner.ConceptScanner.can_fuse` on this
    rank's shard, with importance on and this module's batch size the scanner's), one dataloader instead: the
    activation pass's batches, each planned on the host by the scanner's per-batch rule
    (:meth:`~neurolens_lightning.scanner.ConceptScanner.plan_fused_batch`) into a
    :class:`~neurolens_lightning.scanner_fused.FusedBatch` that ``ProbeModule.validation_step`` scores with
    :meth:`~neurolens_lightning.scanner.ConceptScanner.fused_batch`, as ``scan()`` does. ``fused`` says which
    (set by :meth:`val_dataloader`).
    """

    def __init__(self, scanner: ConceptScanner, batch_size: int = 16, importance: bool = True) -> None:
        super().__init__()
        self.scanner, self.batch_size, self.importance = scanner, batch_size, importance
        self.fused: bool | None = None

    def _collate_examples(self, idx: list[int]) -> dict[str, Any]:
        sc = self.scanner
        ids = torch.tensor(idx)
        return {"batch": sc.adapter.encode([sc.examples[i] for i in idx]), "is_positive": sc.is_positive[ids],
                "groups": sc.groups[ids], "ids": ids}

    def _collate_confidence(self, idx: list[int]) -> dict[str, Any]:
        sc = self.scanner
        items = sc.confidence_inputs()
        chunk = [items[i] for i in idx]
        return {"batch": sc.encode_confidence(chunk)}

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return batch.to(device) if isinstance(batch, FusedBatch) else _move(batch, device)

    def val_dataloader(self) -> list[DataLoader]:
        sc = self.scanner
        ds = _Indices(len(sc.examples))
        sampler = _sampler(ds)
        mine = list(sampler) if sampler is not None else list(range(len(ds)))
        self.fused = self.importance and self.batch_size == sc.batch_size and sc.can_fuse(mine)
        if self.fused:  # the fused pass's batches, planned on the host as scan() plans them
            return [DataLoader(ds, batch_size=self.batch_size, sampler=sampler, collate_fn=sc.plan_fused_batch)]
        loaders = [DataLoader(ds, batch_size=self.batch_size, sampler=sampler, collate_fn=self._collate_examples)]
        if self.importance:
            ds2 = _Indices(len(sc.confidence_inputs()))
            loaders.append(DataLoader(ds2, batch_size=self.batch_size, sampler=_sampler(ds2),
                                      collate_fn=self._collate_confidence))
        return loaders


def gather_rows(pl_module: pl.LightningModule, rows: torch.Tensor) -> torch.Tensor:
    """Concatenate a per-rank ``[n_r, ...]`` tensor across ranks (n_r may differ between ranks)."""
    n = torch.tensor([rows.shape[0]], device=rows.device)
    sizes = pl_module.all_gather(n).flatten().tolist()
    pad = torch.zeros(max(sizes) - rows.shape[0], *rows.shape[1:], device=rows.device, dtype=rows.dtype)
    gathered = pl_module.all_gather(torch.cat([rows, pad]))
    return torch.cat([gathered[r, : sizes[r]] for r in range(len(sizes))])


def _move(batch: dict[str, Any], device: torch.device) -> dict[str, Any]:
    return {k: (v.to(device) if hasattr(v, "to") else v) for k, v in batch.items()}


def _check_grad_mode() -> None:
    if torch.is_inference_mode_enabled():
        raise NeuroLensError("importance needs gradients: create the Trainer with inference_mode=False "
                             "(or pass importance=False)")


class ProbeModule(pl.LightningModule):
    """Scores a concept over the layers of a network as a Lightning validation run."""

    def __init__(self, model: "str | torch.nn.Module | ModelAdapter" = "minilm",
                 concept: "str | Concept" = "royalty", layers: Sequence[int] | None = None,
                 tokenizer: Any = None, importance: bool = True, baseline: str = "zero", top_k: int = 10,
                 batch_size: int = 16, fdr_q: float = 0.05, weights: str = "pretrained",
                 settings: ScanSettings | None = None) -> None:
        super().__init__()
        self.settings = ScanSettings.resolve(settings, {
            "layers": list(layers) if layers is not None else None, "importance": importance, "baseline": baseline,
            "top_k": top_k, "batch_size": batch_size, "fdr_q": fdr_q}).check()
        self.adapter = load_model(model, tokenizer=tokenizer, weights=weights, device="cpu", seed=self.settings.seed)
        self.model = self.adapter.model  # registered so Lightning moves it to the right device
        self.weights = weights
        check_for_model(self.adapter, self.settings)
        #: the probe split as the settings say (a causal test's held-out part: ``scoring.held_out``)
        self.scoring = make_scanner(self.adapter, load_concept(concept), self.settings, rank=0, world=1)
        self.concept = self.scoring.rank_concept
        self.result: ScanResult | None = None
        self._head_ready = False
        self._fused = False  # whether this validation epoch ran the fused pass (ConceptDataModule.fused)

    @property
    def scanner(self) -> ConceptScanner:
        return self._ensure_scanner()

    def _ensure_scanner(self) -> ConceptScanner:
        run = self.scoring
        if run.scanner.selectivity.device != self.device:  # Lightning moved the model: metrics follow
            self.scoring = make_scanner(self.adapter, run.concept, self.settings, rank=0, world=1)
        return self.scoring.scanner

    def datamodule(self) -> ConceptDataModule:
        return ConceptDataModule(self._ensure_scanner(), self.settings.batch_size, self.settings.importance)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.model(*args, **kwargs)

    def on_validation_epoch_start(self) -> None:
        self._ensure_scanner().reset()
        self._head_ready = False
        self._fused = False

    def validation_step(self, batch: dict[str, Any] | FusedBatch, batch_idx: int, dataloader_idx: int = 0) -> None:
        sc = self._ensure_scanner()
        if isinstance(batch, FusedBatch):  # the fused pass's one dataloader: the scanner's per-batch rule
            if batch.needs_grad:
                _check_grad_mode()
            sc.fused_batch(batch)
            self._fused = True
            return
        if dataloader_idx == 0:
            sc.activation_step(batch["batch"], batch["is_positive"], batch["groups"], batch["ids"])
            return
        _check_grad_mode()
        if not self._head_ready:
            sc.fit_head(gather=self._gather_rows)
            self._head_ready = True
        sc.importance_step(batch["batch"])

    def _gather_rows(self, rows: torch.Tensor) -> torch.Tensor:
        if self.trainer is None or self.trainer.world_size == 1:
            return rows
        return gather_rows(self, rows)

    def on_validation_epoch_end(self) -> None:
        sc = self._ensure_scanner()
        sc.last_run_fused = self._fused
        # collective: every rank computes (metrics sync); the same result as scan()'s pipeline
        passes = "fused" if self._fused else "activation + importance" if self.settings.importance else "activation"
        self.result = build_result(self.scoring, weights=self.weights, passes=passes)
        scores = self.result.scores
        top = scores.order[: max(1, min(self.settings.top_k, scores.n_candidates))]
        self.log_dict({
            "neurolens/n_significant_fdr": float(self.result.n_significant_fdr),
            "neurolens/top_selectivity": float(scores.selectivity[top].mean()),
            "neurolens/top_consistency": float(scores.consistency[top].mean()),
            "neurolens/top_score": float(scores.score[top[0]]),
        }, rank_zero_only=True, sync_dist=True)  # identical on every rank: marked synced, no collective runs


class AblationModule(pl.LightningModule):
    """The ablation validation loop: ``trainer.validate(AblationModule(...))`` fills ``result.ablation``.

    Under DDP the ranks share the ablation jobs (each rank runs every held-out input through its share,
    see :class:`~neurolens_lightning.ablation.AblationRunner`) and gather them before the statistics, so
    every rank ends with the single-process result; only rank 0 logs.
    """

    def __init__(self, result: ScanResult, adapter: ModelAdapter, scanner: ConceptScanner, held_out: Concept,
                 method: str = "interchange", null_samples: int = 50, neurons: Sequence[tuple[int, int]] | None = None,
                 replicas: int = 8, batch_size: int = 16, seed: int = 0, audit_samples: int = 20,
                 min_effect: float | None = None, alpha: float = 0.05, n_boot: int = 1000,
                 suppressors: int | None = None, test_top_k: bool = True, direction: str = "importance",
                 split: str | None = None, progress: bool = False) -> None:
        super().__init__()
        self.result, self.adapter, self.scanner, self.held_out = result, adapter, scanner, held_out
        self.model = adapter.model
        self.plan = plan_ablation(result, scanner, method, null_samples, neurons, audit_samples, seed, alpha=alpha,
                                  suppressors=suppressors, test_top_k=test_top_k, direction=direction)
        self.replicas, self.batch_size, self.seed = replicas, batch_size, seed
        self.min_effect, self.alpha, self.n_boot, self.split = min_effect, alpha, n_boot, split
        self.runner = None
        self.progress = progress  # the null rounds' bars (the first round's are the trainer's: neurolens eval's)
        self._chunks = ablation_inputs(adapter, scanner, held_out, batch_size, seed)

    def val_dataloader(self) -> DataLoader:
        def collate(items: list[tuple[int, str, list[Any]]]) -> dict[str, Any]:
            (i, kind, chunk), = items
            batch, src = encode_chunk(self.adapter, self.scanner, kind, chunk, chunk_generator(self.seed, i))
            return {"kind": kind, "batch": batch, "src": src}

        # nothing to test: an empty loop (the summary then says so). Under DDP every rank sees every input
        # chunk and ablates its share of the jobs (AblationRunner), so Lightning must not split the inputs
        chunks = [(i, k, c) for i, (k, c) in enumerate(self._chunks)] if self.plan.candidates else []
        return DataLoader(chunks, batch_size=1, collate_fn=collate, sampler=EveryRankSampler(chunks))

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        return {"kind": batch["kind"], "batch": batch["batch"].to(device), "src": batch["src"]}

    def on_validation_epoch_start(self) -> None:
        if self.scanner.head is None:  # a model without a head whose scoring skipped importance: y needs the probe
            self.scanner.fit_head(gather=gather_cat)
        if self.plan.candidates:
            self.runner = make_runner(self.plan, self.result, self.adapter, self.scanner, replicas=self.replicas)
            announce_ablation(self.plan, self._chunks, self.progress)

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        # batch_idx is the chunk's index (every rank iterates every chunk in order): the null rounds of
        # finish_ablation reuse this clean forward under the same key
        self.runner.step(batch["kind"], batch["batch"], batch["src"], key=batch_idx)

    @classmethod
    def from_scoring(cls, result: ScanResult, scoring: Any, progress: bool = False) -> "AblationModule":
        """The causal test of a :class:`~neurolens_lightning.pipeline.Scoring`'s settings on its held-out part
        (``neurolens eval``'s second validate: the Lightning form of ``pipeline.test_causally``)."""
        s = scoring.settings
        return cls(result, scoring.adapter, scoring.scanner, scoring.held_out or scoring.concept, method=s.ablation,
                   null_samples=s.null_samples, neurons=s.named_neurons(), batch_size=s.batch_size, seed=s.seed,
                   min_effect=s.min_effect, alpha=s.alpha, suppressors=s.suppressors, test_top_k=s.test_top_k,
                   direction=s.direction, split=None if scoring.held_out is not None else SAME_EXAMPLES,
                   progress=progress)

    def on_validation_epoch_end(self) -> None:
        # the first pass ran as this loop; the null grows (plain loop over the same inputs) only
        # where a tested neuron's p-value is not settled yet, then the statistics
        finish_ablation(self.result, self.plan, self.runner, self.adapter, self.scanner, self._chunks,
                        min_effect=self.min_effect, alpha=self.alpha, n_boot=self.n_boot, seed=self.seed,
                        replicas=self.replicas, split=self.split, progress=self.progress)
        logs: dict[str, float] = {}
        for (l, i), ab in self.result.ablation.items():
            logs[f"ablation/delta/{l}:{i}"] = ab["delta"]
            logs[f"ablation/p/{l}:{i}"] = ab["p_value"]
            logs[f"ablation/validated/{l}:{i}"] = float(ab["validated"])
            logs[f"ablation/causal/{l}:{i}"] = float(ab["causal"])
        summary = self.result.ablation_summary
        if summary["joint_delta"] is not None:
            logs["ablation/joint_delta"] = summary["joint_delta"]
        if summary.get("joint_beyond_null") is not None:
            logs["ablation/joint_beyond_null"] = float(summary["joint_beyond_null"])
            logs["ablation/joint_p_null"] = float(summary["joint_p_null"])
        logs["ablation/n_causal"] = float(summary.get("n_causal", 0))
        logs["ablation/n_validated"] = float(summary["n_validated"])
        logs["ablation/n_suppressors_validated"] = float(summary["n_suppressors_validated"])
        self.log_dict(logs, rank_zero_only=True, sync_dist=True)  # gathered: identical on every rank, no collective
