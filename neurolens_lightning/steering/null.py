"""The verdict of a steering: its effect against random sets of the same size from the same layers.

See :mod:`neurolens_lightning.steering` for the design (statistic ``T``, sequential p, the contrast).

Example:
    >>> null_sets_design([4, 3], [(0, 1), (1, 2), (0, 3)])
    ({0: 2, 1: 1}, {0: [0, 2], 1: [0, 1]})
"""

from __future__ import annotations

import math
import random
from collections import Counter
from typing import Any, Sequence

import numpy as np
import torch

from neurolens_lightning.ablation import bootstrap_ci, sequential_p
from neurolens_lightning.errors import NeuroLensError

__all__ = ["null_sets_design", "draw_null_sets", "null_test"]


def null_sets_design(units_per_layer: "dict[int, int] | Sequence[int]", neurons: Sequence[tuple[int, int]]
                     ) -> tuple[dict[int, int], dict[int, list[int]]]:
    """Per layer: how many of ``neurons`` it holds, and the units a null set may draw from there (the others).

    Example:
        >>> null_sets_design([4, 3], [(0, 1), (1, 2), (0, 3)])
        ({0: 2, 1: 1}, {0: [0, 2], 1: [0, 1]})
    """
    units = dict(enumerate(units_per_layer)) if not isinstance(units_per_layer, dict) else units_per_layer
    steered = set((int(l), int(i)) for l, i in neurons)
    counts = dict(sorted(Counter(int(l) for l, _ in steered).items()))
    pools = {l: [u for u in range(int(units[l])) if (l, u) not in steered] for l in counts}
    return counts, pools


def draw_null_sets(counts: dict[int, int], pools: dict[int, list[int]], n: int, rng: random.Random
                   ) -> list[list[tuple[int, int]]]:
    """``n`` random sets with ``counts[l]`` distinct units of layer ``l`` each, drawn from ``pools`` by ``rng``.

    Sets are independent draws (two sets may share a unit); the same ``rng`` state gives the same sets.

    Example:
        >>> draw_null_sets({0: 2}, {0: [0, 2, 5]}, 2, random.Random(0))
        [[(0, 2), (0, 5)], [(0, 0), (0, 2)]]
    """
    for l, c in counts.items():
        if len(pools[l]) < c:
            raise NeuroLensError(f"layer {l} has {len(pools[l])} other units: too few to draw random sets of {c} "
                                 "from it for the null")
    return [[(l, u) for l, c in counts.items() for u in rng.sample(pools[l], c)] for _ in range(n)]


def null_test(e_con: np.ndarray, e_ctl: np.ndarray | None, null_con: Sequence[float],
              null_spec: Sequence[float] | None, direction: int = 1, alpha: float = 0.05, h: int = 10,
              n_boot: int = 1000, seed: int = 0) -> dict[str, Any]:
    """The verdict of a steering effect against random sets (see the module docstring).

    Args:
        e_con, e_ctl: per-input effects ``y(highest scale) − y(lowest scale)`` of the steered set on
            concept and control inputs.
        null_con: per null set, in sampling order, ``direction × mean_concept e``; ``null_spec``
            the same sets' ``direction × (mean_concept e − mean_control e)``.
        direction: +1 when turning the neurons up is predicted to raise y, −1 to lower it.

    Example:
        >>> t = null_test(np.array([2.0, 3.0]), np.array([0.1, 0.0]), [0.1 * k for k in range(19)],
        ...               [0.0] * 19, n_boot=50)
        >>> t["beyond_null"], t["p_null"], t["null_n"], t["wrong_direction_share"]
        (True, 0.05, 19, 0.0)
    """
    d = 1 if direction >= 0 else -1
    T = d * float(e_con.mean()) if len(e_con) else math.nan
    p, g, n = sequential_p(T, list(null_con), h) if len(e_con) else (1.0, 0, 0)
    lo, hi = (bootstrap_ci(torch.from_numpy(d * np.asarray(e_con, dtype=np.float64))[None], n_boot=n_boot,
                           seed=seed) if len(e_con) > 1 else ([T], [T]))
    q = np.quantile(np.asarray(null_con, dtype=np.float64), [0.05, 0.5, 0.95]) if len(null_con) else [math.nan] * 3
    out: dict[str, Any] = {
        "beyond_null": bool(len(e_con) > 0 and p <= alpha), "p_null": float(p), "null_n": int(n),
        "null_exceedances": int(g), "null_beaten": int(n - g), "null_sets_drawn": len(null_con),
        "null_effect_quantiles": {"q05": float(q[0]), "q50": float(q[1]), "q95": float(q[2])},
        "null_effects": [float(v) for v in null_con],
        "effect": T, "effect_ci_low": float(lo[0]), "effect_ci_high": float(hi[0]),
        "effect_raw_mean": float(e_con.mean()) if len(e_con) else math.nan,
        "direction": d, "predicted": "rise" if d > 0 else "fall",
        "wrong_direction_share": float(np.mean(d * e_con < 0)) if len(e_con) else math.nan,
        "wrong_direction_n": int(np.sum(d * e_con < 0)), "n_concept_inputs": int(len(e_con)),
        "alpha": alpha, "h": h,
    }
    if e_ctl is not None and len(e_ctl) and len(e_con) and null_spec is not None:
        t_spec = d * (float(e_con.mean()) - float(e_ctl.mean()))
        ps, gs, ns = sequential_p(t_spec, list(null_spec), h)
        out.update({"control_effect": d * float(e_ctl.mean()), "effect_specific": t_spec,
                    "p_null_specific": float(ps), "null_n_specific": int(ns),
                    "beyond_null_specific": bool(ps <= alpha)})
    else:
        out.update({"control_effect": None, "effect_specific": None, "p_null_specific": None,
                    "null_n_specific": 0, "beyond_null_specific": None})
    return out


def _null_open(value: float, seq: Sequence[float], h: int) -> bool:
    """True while fewer than ``h`` of ``seq`` reach ``value`` (its sequential p is not settled)."""
    return sum(1 for x in seq if x >= value) < h
