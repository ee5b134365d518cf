"""What an ablation run measures: the jobs, the tested neurons and their directions, the random nulls.

**Who is tested, in which direction, against which null.** The top-k candidates (a drop, Δ > 0), the
top suppressors if asked for (a rise; ``suppressors=k``) and any neuron the user names. A named neuron's direction is the sign of
its ranking-split importance (which predicts Δ's sign), so each null neuron is signed by *its own*
importance — the named neuron and its null undergo the same choice and stay exchangeable — or the
user states it (``direction="drop" | "rise"``). The null: the same Δ for random neurons of the same
layer under the same intervention, drawn without replacement in a fixed random order, sampled
adaptively (Besag & Clifford 1991): a layer's sample grows (``null_samples``, then doubling) while a
tested neuron has fewer than ``h`` null neurons at least as extreme, up to ``n_max = ceil(m / alpha)``
(m = all tested neurons). ``p = h / L`` at the h-th exceedance after L draws, else ``(g + 1) / (L + 1)``
(:func:`~neurolens_lightning.functional.statistics.sequential_p`). The joint set (the tested drop neurons
together) gets random sets of the same size and per-layer counts, drawn among the same layers' neurons of the
same importance sign (19 first, up to 99); the audit samples neurons the ranking calls unimportant.

This module holds the vocabulary (:data:`METHODS`, :data:`QUESTIONS`, :data:`DIRECTION_RULES`), the
:class:`AblationJob` / :class:`AblationPlan` records, the up-front argument checks and :func:`plan_ablation`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import numpy as np
import torch

from neurolens_lightning.adapters import ModelAdapter
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.functional.statistics import sequential_p
from neurolens_lightning.settings import DIRECTIONS, METHODS

DEFAULT_METHOD = "interchange"
#: method -> what it asks, in words (results.json ``ablation_summary["question"]``, the page)
QUESTIONS = {
    "interchange": ("does the model use the neuron's concept-dependent activity? (interchange: on each input the "
                    "neuron is shifted at every position so that its pooled activation equals its pooled activation "
                    "on a random concept-absent example; its token-to-token pattern is kept)"),
    "zero": "is the neuron necessary for y? (zero ablation: set to 0 at every position)",
    "mean": "is the neuron necessary for y? (mean ablation: set to its mean activation over concept-absent tokens)",
    "resample": ("is the neuron necessary for y? (resample ablation: each position gets the activation of a random "
                 "concept-absent token)"),
}

#: the rules that choose a tested neuron's direction, and how its null neurons are signed accordingly
DIRECTION_RULES = {
    "role": "its role in the ranking (candidate: a drop, suppressor: a rise); null neurons in the same direction",
    "importance": ("the sign of its ranking-split importance (>= 0: a drop); each null neuron in the direction of "
                   "its own importance sign, so the named neuron and its null undergo the same choice"),
    "drop": "a drop, as stated by the user; null neurons the same",
    "rise": "a rise, as stated by the user; null neurons the same",
}

JOINT_NULL_FIRST, JOINT_NULL_MAX = 19, 99


@dataclass
class AblationJob:
    """Neurons ablated together in one replica: ``(site position, unit)`` pairs."""

    units: list[tuple[int, int]]
    kind: str  # candidate | suppressor | named | null | audit | joint
    layer: int | None = None
    direction: int = 1  # the predicted sign of Δ: +1 a drop of y, -1 a rise


TESTED = ("candidate", "suppressor", "named")


def null_size_needed(n_tested: int, alpha: float) -> int:
    """Null neurons per layer at which the smallest empirical p, 1/(n+1), passes Holm's ``alpha / m``."""
    return max(1, math.ceil(max(n_tested, 1) / alpha))


@dataclass
class AblationPlan:
    """What one ablation run measures: the jobs, the tested neurons, the null sequence per layer.

    ``null_order[l]`` is the random order in which layer l's non-tested neurons enter the
    null; the first ``null_taken[l]`` of them have jobs so far (:meth:`more_null`).
    ``null_sign[l][u]``: the sign of neuron u's ranking-split importance (the direction rule "importance").
    ``joint_null_sets``: random sets with the joint set's per-layer counts, in sampling order; the first
    ``joint_null_taken`` have jobs so far.
    """

    jobs: list[AblationJob]
    candidates: list[tuple[int, int]]
    method: str
    seed: int = 0
    null_order: dict[int, list[int]] = field(default_factory=dict)
    null_taken: dict[int, int] = field(default_factory=dict)
    n_max: int = 0
    h: int = 10
    site_pos: dict[int, int] = field(default_factory=dict)
    null_sign: dict[int, dict[int, int]] = field(default_factory=dict)
    joint_null_sets: list[list[tuple[int, int]]] = field(default_factory=list)
    joint_null_taken: int = 0
    rules: dict[int, str] = field(default_factory=dict)  # tested job -> direction rule

    @property
    def control_jobs(self) -> list[int]:
        return [k for k, j in enumerate(self.jobs) if j.kind in TESTED + ("joint",)]

    @property
    def row_jobs(self) -> list[int]:
        """Jobs whose per-example Δ is kept: those with a reported CI (tested, joint, audit)."""
        return [k for k, j in enumerate(self.jobs) if j.kind in TESTED + ("joint", "audit")]

    @property
    def tested(self) -> list[int]:
        return [k for k, j in enumerate(self.jobs) if j.kind in TESTED]

    @property
    def joint(self) -> int | None:
        return next((k for k, j in enumerate(self.jobs) if j.kind == "joint"), None)

    def null_deltas(self, stat: np.ndarray) -> dict[int, list[float]]:
        """The statistic of each single-neuron null job, per layer, in sampling order."""
        out: dict[int, list[float]] = {l: [] for l in self.null_order}
        for k, j in enumerate(self.jobs):
            if j.kind == "null":
                out[j.layer].append(float(stat[k]))
        return out

    def null_units(self) -> dict[int, list[int]]:
        out: dict[int, list[int]] = {l: [] for l in self.null_order}
        for j in self.jobs:
            if j.kind == "null":
                out[j.layer].append(j.units[0][1])
        return out

    def null_sequence(self, k: int, stat: np.ndarray, null: dict[int, list[float]] | None = None,
                      units: dict[int, list[int]] | None = None) -> list[float]:
        """The null sequence job ``k`` is compared with, signed by its direction rule."""
        j = self.jobs[k]
        null = self.null_deltas(stat) if null is None else null
        if j.kind == "joint":
            return [j.direction * float(stat[q]) for q, jj in enumerate(self.jobs) if jj.kind == "joint_null"]
        if j.kind == "audit":  # two-sided: |statistic|
            return [abs(x) for x in null[j.layer]]
        if self.rules.get(k) == "importance":
            units = self.null_units() if units is None else units
            sign = self.null_sign.get(j.layer, {})
            return [sign.get(u, 1) * x for u, x in zip(units[j.layer], null[j.layer])]
        return [j.direction * x for x in null[j.layer]]

    def test(self, k: int, stat: np.ndarray, null: dict[int, list[float]] | None = None,
             units: dict[int, list[int]] | None = None) -> tuple[float, int, int]:
        """``(p, exceedances, null draws used)`` of job ``k`` (tested, audit or joint)."""
        j = self.jobs[k]
        value = abs(float(stat[k])) if j.kind == "audit" else j.direction * float(stat[k])
        return sequential_p(value, self.null_sequence(k, stat, null, units), self.h)

    def more_null(self, stat: np.ndarray) -> list[AblationJob]:
        """The next round of null jobs (empty when every tested neuron's p is settled).

        A layer's sample grows (doubling) while a tested neuron of the layer has fewer than
        ``h`` null neurons at least as extreme, up to ``n_max`` or the layer's size; the joint
        set's random sets grow the same way up to ``len(joint_null_sets)``.
        """
        null, units = self.null_deltas(stat), self.null_units()
        new: list[AblationJob] = []
        for l, order in self.null_order.items():
            have = self.null_taken[l]
            cap = min(self.n_max, len(order))
            if have >= cap:
                continue
            if not any(self.test(k, stat, null, units)[1] < self.h for k in self.tested if self.jobs[k].layer == l):
                continue
            take = min(cap, max(2 * have, have + 1))
            new += [AblationJob([(self.site_pos[l], u)], "null", l) for u in order[have:take]]
            self.null_taken[l] = take
        jk = self.joint
        have = self.joint_null_taken
        if jk is not None and have < len(self.joint_null_sets) and self.test(jk, stat)[1] < self.h:
            take = min(len(self.joint_null_sets), 2 * have + 1)
            new += [AblationJob([(self.site_pos[l], u) for l, u in units_], "joint_null")
                    for units_ in self.joint_null_sets[have:take]]
            self.joint_null_taken = take
        self.jobs += new
        return new

    def null_bound(self) -> tuple[int, int]:
        """``(rounds, jobs)``: at most how many more rounds :meth:`more_null` can return from here, and at most
        how many null jobs in all (every layer and the joint set growing to their caps, the layers in parallel).

        Example:
            >>> plan = AblationPlan([], [], "zero", 0, {0: list(range(100))}, {0: 5}, 40, 10, {0: 0})
            >>> plan.null_bound()   # 5 -> 10 -> 20 -> 40
            (3, 35)
        """
        jobs, steps = 0, []
        for l, order in self.null_order.items():
            have, cap, k = self.null_taken[l], min(self.n_max, len(order)), 0
            jobs += max(cap - have, 0)
            while have < cap:
                have, k = min(cap, max(2 * have, have + 1)), k + 1
            steps.append(k)
        if self.joint is not None:
            have, cap, k = self.joint_null_taken, len(self.joint_null_sets), 0
            jobs += max(cap - have, 0)
            while have < cap:
                have, k = min(cap, 2 * have + 1), k + 1
            steps.append(k)
        return max(steps, default=0), jobs


def check_ablation_args(adapter: ModelAdapter, layers: Sequence[int] | None, method: str, null_samples: int,
                        neurons: Sequence[tuple[int, int]] | None) -> None:
    """Validate ablation arguments up front, before any scoring work."""
    if method not in METHODS:
        raise NeuroLensError(f"unknown ablation method {method!r}; use one of {', '.join(METHODS)}")
    if null_samples < 2:
        raise NeuroLensError(f"null_samples must be >= 2 to estimate a null spread, got {null_samples}")
    sites = {s.layer: s for s in adapter.select_sites(layers)}
    for l, i in neurons or []:
        if l not in sites:
            raise NeuroLensError(f"neuron {l}:{i}: layer {l} was not scanned (scanned layers: {sorted(sites)})")
        if not 0 <= i < sites[l].units:
            raise NeuroLensError(f"neuron {l}:{i}: index out of range, layer {l} has {sites[l].units} units "
                                 f"(0..{sites[l].units - 1})")


class _Tested(NamedTuple):
    """One tested neuron: its ``(layer, unit)``, job kind, predicted direction (+1 drop, -1 rise) and rule."""

    neuron: tuple[int, int]
    kind: str
    direction: int
    rule: str


def _tested_neurons(result: Any, neurons: Sequence[tuple[int, int]] | None, direction: str,
                    suppressors: int | None, test_top_k: bool) -> list[_Tested]:
    """The tested neurons in job order: top-k candidates, top suppressors, then the named ones not among them
    (each with the direction its rule gives: ``importance`` falls back to ``drop`` without importance)."""
    tested: list[_Tested] = []
    if test_top_k:
        tested += [_Tested(n, "candidate", 1, "role") for n in result.top_neurons()]
        if suppressors:
            tested += [_Tested(n, "suppressor", -1, "role") for n in result.top_suppressors(suppressors)]
    seen = {t.neuron for t in tested}
    scores = result.scores
    imp = scores.importance
    rule = direction if (direction != "importance" or imp is not None) else "drop"
    for l, i in neurons or []:
        if (l, i) in seen:
            continue
        seen.add((l, i))
        if rule == "importance":
            d = -1 if float(imp[scores.flat_index(l, i)]) < 0 else 1
        else:
            d = 1 if rule == "drop" else -1
        tested.append(_Tested((l, i), "named", d, rule))
    return tested


def _null_orders(scanner: Any, imp: torch.Tensor | None, layers: Sequence[int], seen: set[tuple[int, int]],
                 site_pos: dict[int, int], rng: random.Random
                 ) -> tuple[dict[int, list[int]], dict[int, dict[int, int]]]:
    """Per tested layer: the random order in which its untested neurons enter the null (one ``rng.shuffle`` per
    layer, in layer order) and, with importance, each such neuron's importance sign."""
    null_order: dict[int, list[int]] = {}
    null_sign: dict[int, dict[int, int]] = {}
    for l in layers:
        pool = [u for u in range(scanner.sites[site_pos[l]].units) if (l, u) not in seen]
        rng.shuffle(pool)
        null_order[l] = pool
        if imp is not None:
            lo = scanner.offsets[site_pos[l]]
            null_sign[l] = {u: (-1 if float(imp[lo + u]) < 0 else 1) for u in pool}
    return null_order, null_sign


def _audit_jobs(scores: Any, layers: Sequence[int], seen: set[tuple[int, int]], site_pos: dict[int, int],
                audit_samples: int, rng: random.Random) -> list[AblationJob]:
    """The audit: neurons the ranking calls unimportant (|importance| in the bottom half of the tested layers),
    each tested two-sided (any effect, drop or rise, beyond random neurons); ``audit_samples`` of them."""
    in_layers = torch.tensor([int(l) in layers for l in scores.layer.tolist()])
    mag = scores.importance.abs()
    med = mag[in_layers].median() if bool(in_layers.any()) else mag.new_tensor(0.0)
    low = [(int(scores.layer[j]), int(scores.index[j])) for j in
           (in_layers & (mag <= med)).nonzero().flatten().tolist()]
    low = [n for n in low if n not in seen]
    return [AblationJob([(site_pos[l], u)], "audit", l) for l, u in rng.sample(low, min(audit_samples, len(low)))]


def _joint_null_sets(members: Sequence[tuple[int, int]], joint_dir: int, null_order: dict[int, list[int]],
                     null_sign: dict[int, dict[int, int]], seed: int) -> list[list[tuple[int, int]]]:
    """``JOINT_NULL_MAX`` random sets with the joint set's per-layer counts, in sampling order.

    Drawn from the same layers' untested neurons whose importance has the joint set's sign (members are chosen
    by that sign: candidates have importance >= 0, named neurons are tested in their importance's direction), so
    the set and its null undergo the same choice.
    """
    counts: dict[int, int] = {}
    for l, _ in members:
        counts[l] = counts.get(l, 0) + 1
    jrng = random.Random(seed + 1)
    same_sign = bool(null_sign)
    sets: list[list[tuple[int, int]]] = []
    for _ in range(JOINT_NULL_MAX):
        one: list[tuple[int, int]] = []
        for l, c in counts.items():
            pool = [u for u in null_order[l] if not same_sign or null_sign[l].get(u, 1) == joint_dir] \
                or null_order[l]
            one += [(l, u) for u in jrng.sample(pool, min(c, len(pool)))]
        sets.append(one)
    return sets


def plan_ablation(result: Any, scanner: Any, method: str = DEFAULT_METHOD, null_samples: int = 50,
                  neurons: Sequence[tuple[int, int]] | None = None, audit_samples: int = 20,
                  seed: int = 0, alpha: float = 0.05, h: int = 10, suppressors: int | None = None,
                  test_top_k: bool = True, direction: str = "importance") -> AblationPlan:
    """Tested neurons (top-k candidates, top suppressors, explicit ``neurons``), their joint set,
    the first round of the per-layer random null, the joint set's random sets and the audit sample.

    ``suppressors``: how many of the top suppressors to test as well (default 0: they join the one Holm family
    and would double the null it needs; pass ``result.top_k`` to test as many as candidates).
    ``test_top_k=False``: test the named ``neurons`` only (no top-k candidates or suppressors, and
    no audit of the ranking, which those tests would not use).
    ``direction``: how a named neuron's direction is chosen (:data:`DIRECTION_RULES`): ``importance``
    (default; its null neurons are signed by their own importance), or ``drop`` / ``rise`` as the user states.
    """
    check_ablation_args(scanner.adapter, scanner.layers, method, null_samples, neurons)
    if direction not in DIRECTIONS:
        raise NeuroLensError(f"direction must be importance, drop or rise, got {direction!r}")
    imp = result.scores.importance
    site_pos = {s.layer: i for i, s in enumerate(scanner.sites)}
    tested = _tested_neurons(result, neurons, direction, suppressors, test_top_k)
    seen = {t.neuron for t in tested}
    rng = random.Random(seed)  # the null orders first, then the audit sample
    layers = sorted({t.neuron[0] for t in tested})
    null_order, null_sign = _null_orders(scanner, imp, layers, seen, site_pos, rng)
    null_jobs = [AblationJob([(site_pos[l], u)], "null", l) for l, pool in null_order.items()
                 for u in pool[:min(null_samples, len(pool))]]
    audit_jobs: list[AblationJob] = []
    if imp is not None and audit_samples > 0 and test_top_k:
        audit_jobs = _audit_jobs(result.scores, layers, seen, site_pos, audit_samples, rng)
    tested_jobs = [AblationJob([(site_pos[t.neuron[0]], t.neuron[1])], t.kind, t.neuron[0], t.direction)
                   for t in tested]
    drops = [t.neuron for t in tested if t.direction > 0]
    members = drops or [t.neuron for t in tested]
    joint_dir = 1 if drops else -1
    joint_jobs: list[AblationJob] = []
    joint_sets: list[list[tuple[int, int]]] = []
    if tested:
        joint_jobs = [AblationJob([(site_pos[l], i) for l, i in members], "joint", None, joint_dir)]
        joint_sets = _joint_null_sets(members, joint_dir, null_order, null_sign, seed)
    first_sets = joint_sets[:JOINT_NULL_FIRST]
    joint_null_jobs = [AblationJob([(site_pos[l], u) for l, u in one], "joint_null") for one in first_sets]
    jobs = tested_jobs + joint_jobs + null_jobs + audit_jobs + joint_null_jobs
    null_taken = {l: min(null_samples, len(o)) for l, o in null_order.items()}
    rules = {k: t.rule for k, t in enumerate(tested)}
    return AblationPlan(jobs, [t.neuron for t in tested], method, seed, null_order, null_taken,
                        null_size_needed(len(tested), alpha), h, site_pos, null_sign, joint_sets, len(first_sets), rules)
