"""Leave the user's world as it was: the global RNGs, and a given module and tokenizer.

* :func:`preserved_rng` — the CPU torch generator, every initialized CUDA device's, numpy's and
  Python's ``random`` are restored on exit (also on an exception);
* :func:`seeded_rng` — draw from a seed inside the block, then :func:`preserved_rng`'s restore;
* :func:`preserved_module` — a user's module (device(s), each submodule's train/eval flag) and
  tokenizer (pad token) are restored on exit;
* :func:`untouched` — both at once; :func:`user_objects` says which objects of a call are the
  user's own (a module or adapter given, not one loaded from a name or path).

Example:
    >>> import torch
    >>> before = torch.get_rng_state()
    >>> with untouched():
    ...     _ = torch.rand(3)
    >>> torch.equal(torch.get_rng_state(), before)
    True
"""

from __future__ import annotations

import random
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any, Iterator

import numpy as np
import torch

from neurolens_lightning.adapters import ModelAdapter

__all__ = ["preserved_rng", "seeded_rng", "preserved_module", "untouched", "user_objects"]


@contextmanager
def preserved_rng() -> Iterator[None]:
    """Leave the global RNGs as they were: torch's CPU generator and every CUDA device's, numpy's and ``random``'s.

    CUDA states are saved (and restored) only where CUDA is already initialized, so this never
    initializes CUDA. Devices that CUDA initializes inside the block (a model moved there for the
    first time) are reset afterwards to their fresh state (their initial seed, offset 0), as if
    they had been initialized after the block. On exit (also on an exception) the states are
    restored exactly.
    """
    cpu = torch.get_rng_state()
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    np_state, py_state = np.random.get_state(), random.getstate()
    try:
        yield
    finally:
        torch.set_rng_state(cpu)
        if cuda is not None:
            torch.cuda.set_rng_state_all(cuda)
        elif torch.cuda.is_initialized():  # initialized inside the block: back to the fresh state
            for i in range(torch.cuda.device_count()):
                gen = torch.cuda.default_generators[i]
                gen.manual_seed(gen.initial_seed())
        np.random.set_state(np_state)
        random.setstate(py_state)


@contextmanager
def seeded_rng(seed: int) -> Iterator[None]:
    """Draw torch numbers from ``seed`` inside the block; every global RNG is restored after (:func:`preserved_rng`).

    Unlike ``torch.manual_seed`` (which also queues a seed for every CUDA device when CUDA is not
    initialized yet, applied at its first use, and which ``fork_rng(devices=[])`` does not undo),
    this seeds the CPU generator and, only when CUDA is already initialized, every CUDA device.
    numpy and ``random`` are not seeded (only restored).
    """
    with preserved_rng():
        torch.default_generator.manual_seed(seed)
        if torch.cuda.is_initialized():
            torch.cuda.manual_seed_all(seed)  # CUDA is initialized: runs now, nothing is queued
        yield


def _tensor_devices(module: torch.nn.Module) -> list[tuple[torch.nn.Module, str, str, torch.device]]:
    """(owner module, "p"/"b", name, device) of every parameter and buffer of ``module``."""
    out = []
    for m in module.modules():
        out += [(m, "p", k, t.device) for k, t in m._parameters.items() if t is not None]
        out += [(m, "b", k, t.device) for k, t in m._buffers.items() if t is not None]
    return out


def _move_back(placed: list[tuple[torch.nn.Module, str, str, torch.device]]) -> None:
    """Put every parameter and buffer of a module spread over several devices back on its device."""
    with torch.no_grad():
        for m, kind, name, dev in placed:
            t = (m._parameters if kind == "p" else m._buffers).get(name)
            if t is None or t.device == dev:
                continue
            if kind == "p":
                t.data = t.data.to(dev)
                if t.grad is not None:
                    t.grad = t.grad.to(dev)
            else:
                m._buffers[name] = t.to(dev)


@contextmanager
def preserved_module(module: torch.nn.Module, tokenizer: Any = None) -> Iterator[None]:
    """Leave a user's module (and tokenizer) as they were: device(s), each submodule's train/eval
    flag and the tokenizer's pad token are restored on exit, also on an exception.

    A module on one device is moved back with ``module.to(device)`` (parameters stay the same
    objects, as with any ``.to``); a module spread over several devices is moved back tensor by
    tensor.
    """
    modes = [(m, m.training) for m in module.modules()]
    placed = _tensor_devices(module)
    devices = {d for *_, d in placed}
    pad = getattr(tokenizer, "pad_token", None) if tokenizer is not None else None
    try:
        yield
    finally:
        if len(devices) == 1:
            module.to(next(iter(devices)))
        elif devices:
            _move_back(placed)
        for m, was_training in modes:
            m.training = was_training
        if tokenizer is not None and hasattr(tokenizer, "pad_token") and tokenizer.pad_token != pad:
            tokenizer.pad_token = pad


def user_objects(model: Any, tokenizer: Any = None) -> tuple[torch.nn.Module | None, Any]:
    """``(module, tokenizer)`` of a call that are the user's own, to leave as they were.

    An adapter's module (its tokenizer belongs to the adapter: None), an ``nn.Module`` and its
    tokenizer object (None when given as a path: it is loaded here); ``(None, None)`` for a model
    given by name or path.
    """
    if isinstance(model, ModelAdapter):
        return model.model, None
    if isinstance(model, torch.nn.Module):
        return model, None if isinstance(tokenizer, (str, Path)) else tokenizer
    return None, None


@contextmanager
def untouched(module: torch.nn.Module | None = None, tokenizer: Any = None) -> Iterator[None]:
    """:func:`preserved_rng` and, for a given ``module``, :func:`preserved_module` (with ``tokenizer``)."""
    with ExitStack() as guards:
        guards.enter_context(preserved_rng())
        if module is not None:
            guards.enter_context(preserved_module(module, tokenizer))
        yield
