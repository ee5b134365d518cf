"""The fused scoring pass of :class:`~neurolens_lightning.scanner.ConceptScanner`.

When the confidence inputs are the positive examples themselves (importance on, y from the
model's own head, no probe tasks) a batch of positives gets its activations and its importance
from one forward + backward (:meth:`FusedPass.fused_step`). The pass walks exactly the
activation pass's batches, and one rule decides, per batch, how it is scored:

* :meth:`FusedPass.plan_fused_batch` (host, no model call): encode the batch and its positives'
  confidence inputs and classify it as a :class:`FusedBatch` (``fused`` / ``split`` / ``mixed``
  / ``negatives``);
* :meth:`FusedPass.fused_batch` (on the model's device): score it as its kind says.

:meth:`FusedPass.run_fused_pass` (``scan()``) and ``ProbeModule.validation_step`` (the same
batches served by a Lightning dataloader whose ``collate_fn`` is :meth:`FusedPass.plan_fused_batch`)
both go through these two methods, so the two runners score every batch the same way.

:class:`FusedPass` is a part of :class:`~neurolens_lightning.scanner.ConceptScanner` (its base
class), kept in this module; it relies on the scanner's activation and importance steps.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from neurolens_lightning.adapters import Batch
from neurolens_lightning.errors import NeuroLensError

#: how :meth:`FusedPass.fused_batch` scores a batch: positives whose two encodings agree (one forward +
#: backward), positives whose encodings differ, the positives-then-negatives boundary batch, negatives only
FUSED, SPLIT, MIXED, NEGATIVES = "fused", "split", "mixed", "negatives"


def chunks(n: int, size: int) -> Iterator[slice]:
    """``slice``\\ s of ``size`` consecutive indices covering ``range(n)`` (the last one shorter)."""
    for start in range(0, n, size):
        yield slice(start, min(start + size, n))


@dataclass
class FusedBatch:
    """One activation-pass batch of the fused pass, encoded on the host (see :meth:`FusedPass.plan_fused_batch`).

    ``batch`` is the activation encoding (None for a ``fused`` batch: ``conf`` is the same encoding),
    ``conf`` the confidence encoding of the batch's positives (None when it has none); ``ids`` the global
    example indices, ``is_positive`` / ``groups`` their labels.
    """

    kind: str
    ids: torch.Tensor
    is_positive: torch.Tensor
    groups: torch.Tensor
    batch: Batch | None
    conf: Batch | None

    @property
    def needs_grad(self) -> bool:
        """Whether scoring it takes a backward (it has positives)."""
        return self.conf is not None

    def to(self, device: torch.device) -> "FusedBatch":
        """The encodings moved to ``device`` (the labels stay on the host, as in the activation pass)."""
        move = lambda b: None if b is None else b.to(device)  # noqa: E731
        return dataclasses.replace(self, batch=move(self.batch), conf=move(self.conf))


class FusedPass:
    """The fused pass: ``can_fuse`` / ``fused_step`` / the per-batch rule / ``run_fused_pass`` (a base of
    :class:`~neurolens_lightning.scanner.ConceptScanner`)."""

    # the ConceptScanner attributes this part reads (its steps: _shard, _pooler, _grad_acts, ...)
    concept: Any
    adapter: Any
    examples: list[Any]
    batch_size: int
    use_importance: bool
    is_positive: torch.Tensor
    groups: torch.Tensor
    fused_batches: int
    split_batches: int
    _fuse_checked: dict[tuple[int, ...], bool]

    def _positive_shard(self, mine: Sequence[int]) -> list[int]:
        """The positive example ids of the activation shard ``mine``, which are exactly the confidence inputs
        of the importance shard when those are the positives."""
        n_pos = len(self.concept.positive)
        return [i for i in mine if i < n_pos]

    @staticmethod
    def same_encoding(a: Batch, b: Batch) -> bool:
        """Whether two (host-side, not yet moved) batches feed the model the same inputs and pool the same
        positions: equal input names, equal input tensors, equal position and span masks."""
        if a.size != b.size or a.inputs.keys() != b.inputs.keys():
            return False

        def eq(x: torch.Tensor | None, y: torch.Tensor | None) -> bool:
            if x is None or y is None:
                return x is None and y is None
            return x.dtype == y.dtype and x.shape == y.shape and bool(torch.equal(x, y))

        return (all(eq(a.inputs[k], b.inputs[k]) for k in a.inputs) and eq(a.position_mask, b.position_mask)
                and eq(a.span_mask, b.span_mask))

    def fusable_setup(self) -> bool:
        """The static half of :meth:`can_fuse`: importance is on, y comes from the model's own output head (no
        probe head that is fitted only after the activation pass) and the confidence inputs are the positive
        examples themselves (no tasks scored)."""
        return self.use_importance and self.adapter.has_output_head and not self.uses_tasks

    def can_fuse(self, mine: Sequence[int] | None = None) -> bool:
        """Whether :meth:`run` scores in one fused pass (:meth:`run_fused_pass`) instead of two.

        Rule: a batch of positives gets its activations and its importance from the same
        forward + backward exactly when (1) importance is on, (2) y comes from the model's own
        output head, so it does not depend on a probe head fitted from the activation pass
        (models without an output head are never fused), (3) the confidence inputs are the
        positive examples (no probe tasks are scored, i.e. not :attr:`uses_tasks`), and (4) the
        adapter encodes them identically for confidence and for activations:
        :meth:`same_encoding` of ``adapter.encode(chunk)`` and ``encode_confidence(chunk)`` (same
        input tensors, position and span masks). (4) is checked here on this rank's first batch
        of positives and again on every batch by :meth:`plan_fused_batch`. GPT-2 with an LM head
        and no tasks passes; a masked LM fails (4) (it masks the span for y), a probe with tasks
        on a model with a head fails (3), an encoder without a head fails (2). Batches are the
        two passes' own (see :meth:`run_fused_pass`), so there must also be (5) at least one
        activation-pass batch of positives only on this rank (``batch_size`` positives, or no
        negatives): otherwise nothing would be fused.

        ``mine``: this rank's example ids (default: the scanner's own shard ``rank, rank + W, ...``; a
        Lightning run passes its sampler's).
        """
        if not self.fusable_setup():
            return False
        mine = self._shard(len(self.examples)) if mine is None else list(mine)
        pos = self._positive_shard(mine)
        if not pos or (len(pos) < self.batch_size and len(pos) < len(mine)):
            return False
        key = tuple(pos[: self.batch_size])
        if key not in self._fuse_checked:
            items = [self.examples[i] for i in key]
            self._fuse_checked[key] = self.same_encoding(self.adapter.encode(items),
                                                         self.encode_confidence(items, tasks=False))
        return self._fuse_checked[key]

    def fused_step(self, batch: Batch, is_positive: torch.Tensor, groups: torch.Tensor,
                   example_ids: torch.Tensor) -> torch.Tensor:
        """:meth:`activation_step` and :meth:`importance_step` on one batch in one forward + backward.

        ``batch`` must be the confidence encoding of examples whose activation encoding has the
        same inputs and masks (:meth:`same_encoding`; see :meth:`can_fuse`): the hooks pool each
        site output for the activation metrics and keep it in the graph for
        ``torch.autograd.grad`` of y (no parameter ``.grad`` touched). Returns y ``[B]`` (detached).
        """
        on_output, stats = self._pooler(batch)
        outputs, y, acts, grads = self._grad_acts(batch, on_output)
        self._update_importance(batch, acts, grads)
        del acts, grads
        self._update_activation_metrics(batch, outputs, stats, is_positive, groups, example_ids)
        return y.detach()

    def plan_fused_batch(self, idx: Sequence[int]) -> FusedBatch:
        """The host half of the per-batch rule: encode the examples ``idx`` (one activation-pass batch) and
        decide how :meth:`fused_batch` scores them.

        A batch of positives only is also an importance-pass batch (the confidence inputs are
        the positives, sharded the same way): ``fused`` when its confidence encoding equals its
        activation encoding (:meth:`same_encoding`, compared here on the host: no device sync),
        else ``split``. The batch where the positives end and the negatives begin is ``mixed``,
        a batch of negatives ``negatives``.
        """
        idx = list(idx)
        n_pos = len(self.concept.positive)
        ids = torch.tensor(idx, dtype=torch.long)
        items = [self.examples[i] for i in idx]
        positives = [ex for i, ex in zip(idx, items) if i < n_pos]
        batch: Batch | None = self.adapter.encode(items)
        conf = self.encode_confidence(positives, tasks=False) if positives else None
        if len(positives) == len(items):
            kind = FUSED if self.same_encoding(batch, conf) else SPLIT
        else:
            kind = MIXED if positives else NEGATIVES
        if kind == FUSED:
            batch = None  # the confidence encoding is the activation encoding
        return FusedBatch(kind, ids, self.is_positive[ids], self.groups[ids], batch, conf)

    def fused_batch(self, fb: FusedBatch) -> None:
        """The device half of the per-batch rule: score one :meth:`plan_fused_batch` batch (moved to the model's
        device) as the fused pass does.

        ``fused``: one :meth:`fused_step` (activations and importance from one forward +
        backward). Otherwise the no-grad forward of :meth:`activation_step`, stopped once the
        deepest scanned site is pooled (y comes from the model's own head: no probe-head features
        are needed, so the layers above it and the output head are skipped), plus an
        :meth:`importance_step` over the batch's positives (``split``: all of them, the
        importance pass's batch; ``mixed``: the tail, the importance pass's last batch).
        ``fused_batches`` / ``split_batches`` count the ``fused`` / ``split`` batches.
        """
        if fb.kind == FUSED:
            self.fused_step(fb.conf, fb.is_positive, fb.groups, fb.ids)
            self.fused_batches += 1
            return
        outputs, stats = self._activation_forward(fb.batch, stop_early=True)
        self._update_activation_metrics(fb.batch, outputs, stats, fb.is_positive, fb.groups, fb.ids)
        if fb.conf is not None:
            self.importance_step(fb.conf)
            self.split_batches += int(fb.kind == SPLIT)

    def run_fused_pass(self) -> None:
        """Activation metrics and importance in one pass over this rank's shard (requires :meth:`fusable_setup`).

        It walks the activation pass's batches (this rank's examples ``rank, rank + W, ...``,
        positives first, ``batch_size`` at a time) and scores each by the per-batch rule
        (:meth:`plan_fused_batch` then :meth:`fused_batch`): a batch of positives gets one
        :meth:`fused_step` on its confidence encoding; should that encoding differ from the
        activation one after all (checked on every batch on the host), it is scored by a no-grad
        forward + :meth:`importance_step`, so the scores never rest on :meth:`can_fuse`'s
        first-batch check. The batch where the positives end and the negatives begin (only when
        this rank's positive count is not a multiple of ``batch_size``) gets the no-grad forward
        plus an :meth:`importance_step` over its positives (the importance pass's last batch);
        batches of negatives get the no-grad forward. Every metric thus sees exactly the two
        passes' batches (same padding, same update order, so even exact ties among top
        activations resolve the same way) with one forward + backward per positive batch and one
        forward per negative batch (for GPT-2 small the skipped LM head is about a third of a
        forward). ``fused_batches`` / ``split_batches`` count the positive batches scored fused /
        in two.
        """
        if not self.fusable_setup():
            raise NeuroLensError("the fused pass needs importance on, a model with its own output head and no "
                                 "probe tasks scored; use run_activation_pass + run_importance_pass")
        mine = self._shard(len(self.examples))
        total = (len(mine) + self.batch_size - 1) // self.batch_size
        self.fused_batches = self.split_batches = 0
        device = self.adapter.device
        for sl in self._progress(chunks(len(mine), self.batch_size), total, f"scan [{self.concept.name}]"):
            self.fused_batch(self.plan_fused_batch(mine[sl]).to(device))
