"""Forward hooks as context managers that always remove themselves.

Two kinds: :func:`capture` observes a module's output (never alters it) and
:func:`intervene` replaces it. Both remove every hook they registered when the body
exits, also when it raises, so a probe can never leave a model modified.

A site that is the *input* of a module (a gated MLP's neurons are the input of its
down projection; no module outputs them) is named by :class:`InputOf`: hooking it
"as an output" hooks that input, so :func:`capture`, :func:`intervene` and any code
that calls ``site.register_forward_hook`` work on it unchanged.

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
from typing import Any, Callable, Hashable, Iterator, Mapping

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


class _Handles:
    """Removes several hook handles at once (what :meth:`InputOf.register_forward_hook` returns)."""

    def __init__(self, handles: list[Any]) -> None:
        self.handles = handles

    def remove(self) -> None:
        for h in self.handles:
            h.remove()

    def __enter__(self) -> "_Handles":
        return self

    def __exit__(self, *exc: object) -> None:
        self.remove()


class InputOf(nn.Module):
    """The input of ``module`` (its first argument) as a hookable site.

    ``InputOf(m).register_forward_hook(hook)`` registers a forward *pre*-hook on ``m`` that
    calls ``hook(site, args, x)`` with ``x`` = the input about to enter ``m``; a non-None
    return value replaces that input (as a forward hook's return value replaces an output).
    So a site "the input of ``down_proj``" is captured and intervened on exactly like a
    module output (``with_kwargs=True``: ``hook(site, args, kwargs, x)``). The stand-in is
    never called and owns no parameters (``m`` is not registered as its submodule); the hooks
    live on ``m`` (``count_hooks`` sees them) and the returned handle removes them. A pre-hook
    on the stand-in itself would never run, so registering one is an error.

    ``shape_from``: a module that runs before ``m`` and whose first input has the leading shape
    to restore, for a module fed a flattened input (OPT's ``fc2`` gets ``[B*T, U]``; with
    ``shape_from=layer`` the hook sees ``[B, T, U]``, and its result is flattened back).

    Example:
        >>> lin = torch.nn.Linear(3, 2)
        >>> with capture({"in": InputOf(lin)}) as acts:
        ...     _ = lin(torch.ones(1, 3))
        >>> acts["in"].tolist(), len(lin._forward_pre_hooks)
        ([[1.0, 1.0, 1.0]], 0)
    """

    def __init__(self, module: nn.Module, shape_from: nn.Module | None = None) -> None:
        super().__init__()
        object.__setattr__(self, "target", module)  # not a submodule: the site owns no parameters
        object.__setattr__(self, "shape_from", shape_from)

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("InputOf is a hook site, not a layer: run the model that contains its target")

    def extra_repr(self) -> str:
        return f"input of {type(self.target).__name__}"

    def register_forward_pre_hook(self, *args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("InputOf never runs: hook the site with register_forward_hook (it sees the input), or "
                           "register the pre-hook on its target")

    def register_forward_hook(self, hook: Callable[..., Any], *, prepend: bool = False, with_kwargs: bool = False,
                              always_call: bool = False) -> _Handles:
        lead: list[torch.Size] = []  # the leading shape recorded by ``shape_from`` in this forward
        handles: list[Any] = []

        def record(_m: nn.Module, args: tuple, kwargs: dict) -> None:
            first = args[0] if args else next(v for v in kwargs.values() if isinstance(v, torch.Tensor))
            lead[:] = [first.shape[:-1]]

        def pre(_m: nn.Module, args: tuple, kwargs: dict) -> object:
            key = None
            if args:
                x = args[0]
            else:  # the input passed by keyword (nn.Linear's ``input``)
                key = next(k for k, v in kwargs.items() if isinstance(v, torch.Tensor))
                x = kwargs[key]
            shape = x.shape
            if lead and x.dim() == 2 and x.shape[0] == lead[0].numel():
                x = x.reshape(*lead[0], x.shape[-1])
            res = hook(self, args, kwargs, x) if with_kwargs else hook(self, args, x)
            if res is None:
                return None
            new = _first_tensor(res).reshape(shape)
            if key is None:
                return (new, *args[1:]), kwargs
            return args, {**kwargs, key: new}

        if self.shape_from is not None:
            handles.append(self.shape_from.register_forward_pre_hook(record, with_kwargs=True))
        handles.append(self.target.register_forward_pre_hook(pre, prepend=prepend, with_kwargs=True))
        return _Handles(handles)


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
