"""Forward hooks as context managers that always remove themselves.

Two kinds: :func:`capture` observes a module's output (never alters it) and
:func:`intervene` replaces it. Both remove every hook they registered when the body
exits, also when it raises, so a probe can never leave a model modified.

Example:
    >>> import torch
    >>> lin = torch.nn.Linear(2, 3)
    >>> with capture({"lin": lin}) as acts:
    ...     _ = lin(torch.ones(1, 2))
    >>> acts["lin"].shape, len(lin._forward_hooks)
    (torch.Size([1, 3]), 0)
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Hashable, Iterator, Mapping

import torch
from torch import nn

OutputFn = Callable[[Hashable, torch.Tensor], None]
EditFn = Callable[[Hashable, torch.Tensor], torch.Tensor]


def _first_tensor(output: object) -> torch.Tensor:
    if isinstance(output, torch.Tensor):
        return output
    if isinstance(output, (tuple, list)) and output and isinstance(output[0], torch.Tensor):
        return output[0]
    raise TypeError(f"hooked module returned {type(output).__name__}, expected a tensor")


@contextmanager
def capture(
    modules: Mapping[Hashable, nn.Module],
    on_output: OutputFn | None = None,
    detach: bool = True,
) -> Iterator[dict[Hashable, torch.Tensor]]:
    """Observe the outputs of ``modules`` during the body.

    Without ``on_output`` the last output of each module is stored in the yielded dict
    (detached unless ``detach=False``, which keeps it in the autograd graph so gradients
    with respect to it can be taken). With ``on_output(key, tensor)`` nothing is stored:
    the function sees each output as it is produced (e.g. to pool it right away).
    """
    store: dict[Hashable, torch.Tensor] = {}
    handles = []

    def make_hook(key: Hashable):
        def hook(_module: nn.Module, _inputs: object, output: object) -> None:
            out = _first_tensor(output)
            if detach:
                out = out.detach()
            if on_output is None:
                store[key] = out
            else:
                on_output(key, out)
            return None  # observe only: returning None keeps the module's output unchanged

        return hook

    try:
        for key, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(key)))
        yield store
    finally:
        for h in handles:
            h.remove()


@contextmanager
def intervene(modules: Mapping[Hashable, nn.Module], edit: EditFn) -> Iterator[None]:
    """Replace each module's output by ``edit(key, output)`` during the body.

    ``edit`` must return a tensor of the same shape; it may modify a clone, never the input
    in place (other hooks may hold a reference to it).
    """
    handles = []

    def make_hook(key: Hashable):
        def hook(_module: nn.Module, _inputs: object, output: object) -> object:
            out = _first_tensor(output)
            new = edit(key, out)
            if new.shape != out.shape:
                raise RuntimeError(f"intervention on {key!r} changed the output shape {tuple(out.shape)} -> "
                                   f"{tuple(new.shape)}")
            if isinstance(output, torch.Tensor):
                return new
            return (new, *output[1:])

        return hook

    try:
        for key, module in modules.items():
            handles.append(module.register_forward_hook(make_hook(key)))
        yield
    finally:
        for h in handles:
            h.remove()


def count_hooks(model: nn.Module) -> int:
    """Number of forward / pre-forward / backward hooks registered anywhere in ``model``."""
    n = 0
    for m in model.modules():
        n += len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        n += len(getattr(m, "_backward_pre_hooks", {}))
    return n


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put ``model`` (and every submodule) in eval mode, restoring each module's own flag afterwards."""
    modes = [(m, m.training) for m in model.modules()]
    try:
        model.eval()
        yield model
    finally:
        for m, was_training in modes:
            m.training = was_training
