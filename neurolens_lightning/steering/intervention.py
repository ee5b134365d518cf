""":func:`steer`: multiply or set chosen neurons' activations at every position, around any code.

Example:
    >>> with steer(gpt2, [(0, 7)], scale=4.0) as m:              # doctest: +SKIP
    ...     text = tok.decode(m.generate(ids, max_new_tokens=8)[0])
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Iterator, Sequence

import torch
from torch import nn

from neurolens_lightning.adapters import ModelAdapter, adapter_for
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.hooks import intervene

__all__ = ["steer"]



def _sites_for(adapter: ModelAdapter, neurons: Sequence[tuple[int, int]]) -> dict[int, list[int]]:
    """``{site position: [units]}`` for ``(layer, index)`` pairs, validating both."""
    sites = adapter.sites
    out: dict[int, list[int]] = {}
    if not neurons:
        raise NeuroLensError("steering needs at least one neuron, as (layer, index) pairs (CLI: --neurons L:I)")
    for l, i in neurons:
        if not 0 <= int(l) < len(sites):
            raise NeuroLensError(f"neuron {l}:{i}: layer {l} out of range, {adapter.name} has layers "
                                 f"0..{len(sites) - 1}")
        if not 0 <= int(i) < sites[l].units:
            raise NeuroLensError(f"neuron {l}:{i}: index out of range, layer {l} has {sites[l].units} units "
                                 f"(0..{sites[l].units - 1})")
        out.setdefault(int(l), []).append(int(i))
    return out


@contextmanager
def steer(model: "nn.Module | ModelAdapter", neurons: Sequence[tuple[int, int]], scale: float | None = None, *,
          value: "float | torch.Tensor | None" = None) -> Iterator[nn.Module]:
    """Multiply (``scale``) or set (``value``) the activations of ``neurons`` at every position.

    Args:
        model: a supported model (GPT-2, BERT-like, torchvision ResNet) or its adapter.
        neurons: ``(layer, index)`` pairs, layers numbered as in a scan.
        scale: the factor (0 = zero ablation, 1 = unchanged, 2 = doubled, ...).
        value: instead of a scale, the value to set: a number, or a tensor with one value
            per neuron (e.g. their mean activations).

    Yields the underlying ``nn.Module``; every hook is removed on exit, also on exceptions.

    Example:
        >>> with steer(gpt2, [(0, 7)], scale=4.0) as m:              # doctest: +SKIP
        ...     text = tok.decode(m.generate(ids, max_new_tokens=8)[0])
    """
    if (scale is None) == (value is None):
        raise NeuroLensError("steer: pass exactly one of scale= (multiply) or value= (set)")
    adapter = model if isinstance(model, ModelAdapter) else adapter_for(model, check_tokenizer=False)
    by_site = _sites_for(adapter, neurons)
    order = [(l, i) for l, units in by_site.items() for i in units]
    vals: dict[int, torch.Tensor] = {}
    if value is not None:
        v = torch.as_tensor(value, dtype=torch.float32).flatten()
        if v.numel() not in (1, len(order)):
            raise NeuroLensError(f"steer: value= has {v.numel()} entries for {len(order)} neurons (give 1 or one each)")
        for l, units in by_site.items():
            vals[l] = (v.expand(len(order)) if v.numel() == 1 else v)[[order.index((l, i)) for i in units]]

    def edit(key: int, out: torch.Tensor) -> torch.Tensor:
        new = out.clone()
        view = adapter.site_view(new)
        units = by_site[key]
        if value is None:
            view[..., units] = view[..., units] * scale
        else:
            view[..., units] = vals[key].to(view.device, view.dtype)
        return adapter.unview(view, new)

    with intervene({l: adapter.sites[l].module for l in by_site}, edit):
        yield adapter.model
