"""One settings object for every way of running a scan: :class:`ScanSettings`.

``scan()``, ``neurolens scan`` / ``eval`` / ``compare`` (their OmegaConf schemas extend it), the
:class:`~neurolens_lightning.callback.NeuroLensCallback`, :class:`~neurolens_lightning.modules.ProbeModule`,
``dose_response`` / ``neurolens steer`` and ``compare()`` all read the same fields with the same defaults, so the
same settings give the same split, scores and verdicts whichever entry point runs them
(``tests/test_spine.py``). The fields are primitives (OmegaConf structured-config friendly); named neurons are
``"LAYER:INDEX"`` strings (:func:`parse_neuron` / :func:`format_neuron` are the one spelling).

Example:
    >>> s = ScanSettings(layers=[4, 5], ablate=True, neurons=["5:17"], seed=3).check()
    >>> s.named_neurons(), s.record(pooling="max", device="cpu")["seed"]
    ([(5, 17)], 3)
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, List, Literal, Optional, Sequence, Tuple

from neurolens_lightning.errors import NeuroLensError

__all__ = ["ScanSettings", "parse_neuron", "format_neuron", "METHODS", "DIRECTIONS"]

#: interventions of the causal test (``ablation/runner.py``): interchange tests the concept, the others necessity
METHODS: Tuple[str, ...] = ("interchange", "zero", "mean", "resample")
#: how a named neuron's predicted direction is chosen (``ablation.DIRECTION_RULES``)
DIRECTIONS: Tuple[str, ...] = ("importance", "drop", "rise")


def parse_neuron(spec: Any) -> tuple[int, int]:
    """``"5:17"`` (or a ``(5, 17)`` pair) -> ``(5, 17)``; anything else is one clear error.

    >>> parse_neuron(" 2:37 ")
    (2, 37)
    """
    if isinstance(spec, (tuple, list)) and len(spec) == 2 and all(isinstance(v, int) and not isinstance(v, bool)
                                                                   for v in spec):
        return int(spec[0]), int(spec[1])
    m = re.fullmatch(r"\s*(-?\d+)\s*:\s*(-?\d+)\s*", str(spec))  # a negative one is refused as out of range
    if not m:
        hint = ("; write neurons as quoted strings, e.g. neurons=[\"5:17\"] (YAML reads an unquoted 5:17 as the "
                "base-60 number 317)" if str(spec).strip().isdigit() else "")
        raise NeuroLensError(f"neuron {spec!r} is not LAYER:INDEX (e.g. 2:37){hint}")
    return int(m.group(1)), int(m.group(2))


def format_neuron(layer: int, index: int) -> str:
    """The one spelling of a neuron: ``"LAYER:INDEX"``.

    >>> format_neuron(5, 17)
    '5:17'
    """
    return f"{int(layer)}:{int(index)}"


@dataclass
class ScanSettings:
    """What is scored and how it is tested: the fields shared by every entry point.

    Scoring: ``layers`` (None = all), ``top_k`` candidates (and tested neurons), ``importance`` (gradient x
    activation, ``baseline`` zero | mean), ``pooling`` (None = the adapter's), ``batch_size``, ``max_neurons``
    in the table, ``fdr_q`` (Benjamini-Hochberg level), ``min_selectivity`` (the smallest layer-scaled d of a
    candidate), ``top_examples`` per neuron.

    Causal test (``ablate``, or any ``neurons``): the intervention ``ablation``, ``null_samples`` random neurons
    per layer in the null's first round, the named ``neurons`` (tested whatever their rank), ``test_top_k``
    (False: the named neurons only), ``suppressors`` tested too, ``direction`` of named neurons, ``min_effect``
    (None = the default of y's units), family-wise ``alpha``. The probe is split into a ranking and a held-out
    part (``holdout`` fraction, 0 = rank and test on the same examples) drawn from ``seed``, which also seeds the
    null's draws and random weights.
    """

    layers: Optional[List[int]] = None
    top_k: int = 10
    importance: bool = True
    baseline: Literal["zero", "mean"] = "zero"
    pooling: Optional[str] = None
    batch_size: int = 16
    max_neurons: int = 500
    fdr_q: float = 0.05
    min_selectivity: float = 0.5
    top_examples: int = 3
    ablate: bool = False
    ablation: Literal["interchange", "zero", "mean", "resample"] = "interchange"
    null_samples: int = 50
    neurons: List[str] = field(default_factory=list)
    test_top_k: bool = True
    suppressors: int = 0
    direction: Literal["importance", "drop", "rise"] = "importance"
    min_effect: Optional[float] = None
    alpha: float = 0.05
    holdout: float = 0.5
    seed: int = 0

    def __post_init__(self) -> None:
        # Python callers may name neurons as (layer, index) pairs: kept in the one spelling
        self.neurons = [n if isinstance(n, str) else format_neuron(*parse_neuron(n)) for n in (self.neurons or [])]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_any(cls, source: Any = None, **overrides: Any) -> "ScanSettings":
        """Settings from another settings object or a config that extends this schema (extra fields are
        ignored), a mapping, or None (the defaults); ``overrides`` win."""
        names = [f.name for f in fields(cls)]
        if source is None:
            base: dict[str, Any] = {}
        elif isinstance(source, dict):
            base = {k: v for k, v in source.items() if k in names}
        else:
            base = {k: getattr(source, k) for k in names if hasattr(source, k)}
        base.update({k: v for k, v in overrides.items() if k in names})
        if base.get("layers") is not None:
            base["layers"] = [int(l) for l in base["layers"]]
        base["neurons"] = list(base.get("neurons") or [])
        return cls(**base)

    @classmethod
    def resolve(cls, settings: "ScanSettings | None", arguments: dict[str, Any]) -> "ScanSettings":
        """``settings`` (or the defaults) with every keyword argument of an entry point that differs from its
        default applied: an explicit argument wins over the settings object."""
        defaults = cls()
        given = {k: v for k, v in arguments.items() if v != getattr(defaults, k)
                 and not (k == "neurons" and not v)}  # no neurons named (None or []) is the default
        return cls.from_any(settings, **given)

    def with_(self, **changes: Any) -> "ScanSettings":
        """A copy with ``changes`` (the neurons normalized again)."""
        return replace(self, **changes)

    # ------------------------------------------------------------------ derived
    @property
    def tests_causally(self) -> bool:
        """The causal test runs when asked for or when neurons are named (naming asks for their test)."""
        return bool(self.ablate or self.neurons)

    def named_neurons(self) -> list[tuple[int, int]] | None:
        """The named neurons as ``(layer, index)`` pairs, or None."""
        return [parse_neuron(n) for n in self.neurons] or None

    def split(self, concept: Any) -> tuple[Any, Any]:
        """``(ranking part, held-out part or None)``: the probe is split only for a causal test with ``holdout > 0``."""
        if self.tests_causally and self.holdout > 0:
            return concept.split(self.holdout, seed=self.seed)
        return concept, None

    def check(self) -> "ScanSettings":
        """Refuse values that need no model to be judged wrong, each in one line naming the fix. Returns self."""
        def bad(msg: str) -> None:
            raise NeuroLensError(msg)

        if self.top_k < 1:
            bad(f"top_k must be >= 1, got {self.top_k}")
        if self.batch_size < 1:
            bad(f"batch_size must be >= 1, got {self.batch_size}")
        if self.layers is not None and any(l < 0 for l in self.layers):
            bad(f"layers must be >= 0 (0 is closest to the input), got {self.layers}")
        if not 0 < self.fdr_q <= 1:
            bad(f"fdr_q must be in (0, 1], got {self.fdr_q}")
        if self.pooling not in (None, "auto", "max", "mean", "span", "last"):
            bad(f"unknown pooling {self.pooling!r}; use one of auto, max, mean, span, last")
        if self.baseline not in ("zero", "mean"):
            bad(f"baseline must be zero or mean, got {self.baseline!r}")
        if self.max_neurons < 1 or self.top_examples < 0:
            bad(f"max_neurons must be >= 1 and top_examples >= 0, got {self.max_neurons}, {self.top_examples}")
        self.named_neurons()  # each spelled LAYER:INDEX
        if not self.tests_causally:
            return self
        if self.ablation not in METHODS:
            bad(f"unknown ablation method {self.ablation!r}; use one of {', '.join(METHODS)}")
        if self.null_samples < 2:
            bad(f"null_samples must be >= 2 to estimate a null spread, got {self.null_samples}")
        if self.direction not in DIRECTIONS:
            bad(f"direction must be importance, drop or rise, got {self.direction!r}")
        if self.suppressors < 0:
            bad(f"suppressors must be >= 0, got {self.suppressors}")
        if not 0 <= self.holdout < 1:
            bad(f"holdout must be in [0, 1) (the held-out fraction of the probe; 0 = rank and ablate on the same "
                f"examples), got {self.holdout}")
        if not 0 < self.alpha < 1:
            bad(f"alpha must be in (0, 1), got {self.alpha}")
        if self.min_effect is not None and self.min_effect < 0:
            bad(f"min_effect must be >= 0 (a size of |Δ| in y's units), got {self.min_effect}")
        return self

    def record(self, pooling: str, device: str, **extra: Any) -> dict[str, Any]:
        """The settings as results.json records them (``settings``): what was scored, how and where."""
        rec: dict[str, Any] = {"importance": self.importance, "baseline": self.baseline, "pooling": pooling,
                               "batch_size": self.batch_size, "device": device, "ablate": self.tests_causally,
                               "seed": self.seed, "holdout": self.holdout if self.tests_causally else 0.0}
        if self.tests_causally:
            rec.update({"ablation": self.ablation, "direction": self.direction, "suppressors": self.suppressors})
        rec.update(extra)
        return rec

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def settings_fields() -> Sequence[str]:
    """The names of :class:`ScanSettings`' fields (what every entry point shares)."""
    return [f.name for f in fields(ScanSettings)]
