"""Any other text model, by naming its neuron site: ``site="blocks.*.mlp.fc2:input"``.

A *site spec* is ``PATTERN[:input|:output]`` (default ``:output``). ``PATTERN`` is a glob over
the names of ``model.named_modules()``, matched one dotted path component at a time: ``*``
matches one whole component or part of one (``blocks.*.mlp.fc2``, ``layer*.*.conv2``), never a
dot; ``?`` and ``[...]`` work as in :mod:`fnmatch`. ``:output`` takes the module's output (its
first tensor if it returns a tuple), ``:input`` the first tensor entering it (hooked with
:class:`~neurolens_lightning.hooks.InputOf`, like the decoder adapter's down projections). The
matched modules, in ``named_modules()`` order (model order), are the layers ``0..L-1``; each
unit is one entry of the **last** dimension of the hooked tensor.

Contract for a model NeuroLens does not know (:class:`SiteAdapter`):

* text only, with a fast Hugging Face tokenizer (``tokenizer=``, for encoding and span marks);
* the model is called as ``model(input_ids=ids, attention_mask=mask)`` when its ``forward``
  takes an ``input_ids`` parameter, else ``model(ids)`` (``attention_mask=`` is passed as well
  when ``forward`` takes it or ``**kwargs``); ``ids`` and ``mask`` are ``[B, T]`` LongTensors;
* it returns a tensor ``[B, T, H]``, a tuple whose first item is one, or an object with
  ``last_hidden_state`` (or ``hidden_states``, the last one is used; ``output_hidden_states=True``
  is passed to ``transformers`` models, so any of them qualifies);
* every matched site produces a tensor ``[B, T, U]`` (batch first, one row per input token,
  units last) exactly once per forward.

y (the confidence that importance, ablation and steering measure) is always a fitted probe
head's log-odds on the mean-pooled (over real tokens) final hidden state, as for encoders
without an output head: NeuroLens cannot know what an unknown model's outputs mean. The
probe's tasks are therefore not used. The units of every site are read off one forward of a
one-word input the first time the sites are needed (``adapter.sites``); a pattern matching
nothing, a site that does not run, or one whose shape does not fit the contract is refused
there with one line that names the pattern.

Example:
    >>> import torch
    >>> net = torch.nn.Sequential(torch.nn.Linear(2, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    >>> [n for n, _ in match_modules(net, "*")]
    ['0', '1', '2']
    >>> parse_site("blocks.*.mlp.fc2:input")
    ('blocks.*.mlp.fc2', 'input')
"""

from __future__ import annotations

import difflib
import inspect
import re
from fnmatch import fnmatchcase
from typing import Any, Sequence

import torch
from torch import nn

from neurolens_lightning.adapters.base import Batch, NeuronSite
from neurolens_lightning.adapters.text import TextAdapter
from neurolens_lightning.concepts import Example, TextExample, TextTask
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.hooks import InputOf, capture, eval_mode

__all__ = ["SiteAdapter", "parse_site", "match_modules", "site_candidates"]


def parse_site(spec: str) -> tuple[str, str]:
    """``"PATTERN[:input|:output]"`` -> ``(PATTERN, "input" | "output")`` (default ``output``)."""
    if not isinstance(spec, str) or not spec.strip():
        raise NeuroLensError(f"site must be 'PATTERN[:input|:output]' (e.g. 'model.layers.*.mlp.down_proj:input'), "
                             f"got {spec!r}")
    spec = spec.strip()
    pattern, kind = spec, "output"
    if ":" in spec:
        pattern, _, kind = spec.rpartition(":")
        if kind not in ("input", "output"):
            raise NeuroLensError(f"site {spec!r}: the part after ':' must be 'input' or 'output', got {kind!r}")
    if not pattern or any(not part for part in pattern.split(".")):
        raise NeuroLensError(f"site {spec!r}: the module pattern {pattern!r} has an empty path component")
    return pattern, kind


def _matches(pattern: str, name: str) -> bool:
    parts, names = pattern.split("."), name.split(".")
    return len(parts) == len(names) and all(fnmatchcase(n, p) for p, n in zip(parts, names))


def match_modules(model: nn.Module, pattern: str) -> list[tuple[str, nn.Module]]:
    """``(name, module)`` of every submodule whose ``named_modules()`` name matches ``pattern``
    (one path component per ``*``), in model order; the root module (name ``""``) never matches."""
    return [(n, m) for n, m in model.named_modules() if n and _matches(pattern, n)]


def site_candidates(model: nn.Module, pattern: str = "", k: int = 6) -> list[str]:
    """A few module-name patterns of ``model`` (numeric path components as ``*``) close to ``pattern``."""
    general = list(dict.fromkeys(re.sub(r"(?<![^.])\d+(?![^.])", "*", n) for n, _ in model.named_modules() if n))
    close = difflib.get_close_matches(pattern, general, n=k, cutoff=0.0) if pattern else []
    return close or general[:k]


def _first_tensor(out: Any) -> torch.Tensor | None:
    if isinstance(out, torch.Tensor):
        return out
    for key in ("last_hidden_state",):
        val = getattr(out, key, None)
        if isinstance(val, torch.Tensor):
            return val
    hs = getattr(out, "hidden_states", None)
    if isinstance(hs, (tuple, list)) and hs and isinstance(hs[-1], torch.Tensor):
        return hs[-1]
    if hasattr(out, "to_tuple"):  # a transformers ModelOutput without hidden states: its first field
        out = out.to_tuple()
    if isinstance(out, (tuple, list)) and out and isinstance(out[0], torch.Tensor):
        return out[0]
    return None


class SiteAdapter(TextAdapter):
    """A text model NeuroLens does not know, with neurons at the modules named by ``site``.

    ``SiteAdapter(model, tokenizer, site="blocks.*.mlp.fc2:input")``; see the module docstring
    for the site syntax and the contract the model must meet. y is a fitted probe head on the
    mean-pooled final hidden state (``has_output_head`` is False).
    """

    family = "site"

    def __init__(self, model: nn.Module, tokenizer: Any, site: str, name: str = "model",
                 device: str | torch.device | None = None, pooling: str | None = None,
                 max_length: int | None = None) -> None:
        self.site = site
        self.pattern, self.kind = parse_site(site)
        super().__init__(model, tokenizer, name=name, device=device, pooling=pooling, max_length=max_length)
        self._matched = match_modules(model, self.pattern)
        if not self._matched:
            raise self._refusal("matches no module")

    def _refusal(self, why: str) -> NeuroLensError:
        cands = ", ".join(site_candidates(self.model, self.pattern))
        return NeuroLensError(f"site {self.site!r} {why} of {type(self.model).__name__}; module names look like: "
                             f"{cands} ('*' matches one path component)")

    # ---------------------------------------------------------------- forward
    def forward(self, batch: Batch) -> Any:
        ids = batch.inputs["input_ids"]
        attn = batch.inputs.get("attention_mask")
        try:
            params = inspect.signature(self.model.forward).parameters
        except (TypeError, ValueError):  # pragma: no cover - builtin forward
            params = {}
        any_kw = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values())
        kw: dict[str, Any] = {}
        if attn is not None and ("attention_mask" in params or any_kw):
            kw["attention_mask"] = attn
        hf = hasattr(getattr(self.model, "config", None), "output_hidden_states")  # a transformers model
        if "output_hidden_states" in params or (hf and any_kw):  # y's features: the last hidden state
            kw["output_hidden_states"] = True
        if "use_cache" in params:  # single forward passes: no KV cache
            kw["use_cache"] = False
        if "input_ids" in params:
            return self.model(input_ids=ids, **kw)
        return self.model(ids, **kw)

    def features(self, batch: Batch, outputs: Any) -> torch.Tensor:
        hidden = _first_tensor(outputs)
        if hidden is None:
            raise NeuroLensError(f"{self.name} returned {type(outputs).__name__}: a model scanned by site must return "
                                 "a tensor [B, T, H], a tuple starting with one, or an object with last_hidden_state")
        if hidden.dim() == 2:  # already pooled [B, H]
            return hidden
        mask = batch.inputs["attention_mask"].unsqueeze(-1).to(hidden.dtype)
        return (hidden * mask).sum(1) / mask.sum(1).clamp_min(1)

    @property
    def has_output_head(self) -> bool:
        return False

    def encode_confidence(self, examples: Sequence[Example] | None, tasks: Sequence[TextTask] | None) -> Batch:
        return self.encode(examples or [])

    def task_overhead(self) -> int | None:
        return None  # y is measured on the examples: tasks are not encoded

    # ---------------------------------------------------------------- sites
    @property
    def sites(self) -> list[NeuronSite]:
        # built once and kept: a site's module is compared by identity (``adapter.sites.index(site)``)
        cached = self.__dict__.get("_sites")
        if cached is None:
            cached = self._build_sites()
            self.__dict__["_sites"] = cached
        return list(cached)

    def _build_sites(self) -> list[NeuronSite]:
        hooked = {i: (InputOf(m) if self.kind == "input" else m) for i, (_, m) in enumerate(self._matched)}
        batch = self.encode([TextExample(text="the king")]).to(self.device)
        B, T = batch.inputs["input_ids"].shape
        try:
            with torch.no_grad(), eval_mode(self.model), capture(hooked) as acts:
                out = self.forward(batch)
        except TypeError as e:  # a captured non-tensor, or a forward that does not take input_ids
            raise self._refusal(f"cannot be read ({e})") from None
        if _first_tensor(out) is None:
            raise NeuroLensError(f"{self.name} returned {type(out).__name__}: a model scanned by site must return a "
                                 "tensor [B, T, H], a tuple starting with one, or an object with last_hidden_state")
        missing = [self._matched[i][0] for i in hooked if i not in acts]
        if missing:
            raise self._refusal(f"matches module(s) that never run in a forward ({', '.join(missing[:3])})")
        sites = []
        for i, (mod_name, mod) in enumerate(self._matched):
            a = acts[i]
            if a.dim() != 3 or tuple(a.shape[:2]) != (B, T):
                raise self._refusal(f"matches {mod_name} whose {self.kind} has shape {tuple(a.shape)}, not "
                                    f"[batch, tokens, units] = [{B}, {T}, U]")
            expect = getattr(mod, "in_features" if self.kind == "input" else "out_features", None)
            if isinstance(expect, int) and expect != a.shape[-1]:
                raise self._refusal(f"matches {mod_name} whose {self.kind} has {a.shape[-1]} units where its "
                                    f"{'in' if self.kind == 'input' else 'out'}_features is {expect}")
            sites.append(NeuronSite(i, f"{mod_name}:{self.kind}", hooked[i], int(a.shape[-1])))
        return sites

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "site": self.site}
