"""The statistics of a finished ablation run: CIs, p-values, Holm, the verdict of each neuron, joint set, audit.

``Δ = mean_x [y(x) − y_intervened(x)]`` on held-out concept inputs (bootstrap 95% CI), and the same on
held-out control inputs with **the same y**: with tasks, control inputs are the negative sentences
followed by a task target (targets cycled), so both sides are Δ log p(target). Each tested neuron's Δ is
compared with its layer's random-neuron null by the sequential p of
:func:`~neurolens_lightning.functional.statistics.sequential_p`.
**Holm runs once over every tested neuron** (drops and rises together): P(any false "beyond the null")
<= alpha over the scan.

**Specificity**: the one-sided bootstrap p of ``s·(Δ_concept − Δ_control) <= 0``, Holm over the tested
neurons. **Causal** (``causal``): Holm p <= alpha, the ``s·Δ`` CI above 0, specific, ``s·Δ >=
min_effect``. **Validated**: causal *and* a candidate / suppressor of the ranking. Three outcomes, one
vocabulary (:func:`verdict_word`): validated, causal but not a candidate, not causal.

**The joint set** (the tested drop neurons together) is compared with random sets of the same size and
per-layer counts, drawn among the same layers' neurons of the same importance sign (sequential, up to
99 sets): ``joint_p_null``, ``joint_beyond_null``. **The audit**: neurons the ranking calls unimportant
(bottom half of |importance|), each tested two-sided; ``expected_by_chance`` is what random neurons of
the same layers reach under the same rule. ``benchmarks/bench_calibration.py`` measures all of this
through :func:`neurolens_lightning.scan`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import kurtosis, spearmanr

from neurolens_lightning.ablation.plan import DIRECTION_RULES, QUESTIONS, TESTED, AblationPlan
from neurolens_lightning.ablation.runner import AblationRunner
from neurolens_lightning.functional.statistics import bootstrap_ci, holm_adjust, specificity_p


@dataclass
class SummarySettings:
    """The settings and input counts a summary applies and reports, beside the measurements."""

    min_effect: float
    alpha: float
    n_boot: int
    seed: int
    split: str
    n_concept: int
    n_control: int
    y: str = ""


@dataclass
class _Tests:
    """The measurements and tests of the reported jobs (tested, joint, audit), by job index."""

    ci: dict[int, tuple[float, float]]  # bootstrap CI of Δ on the concept inputs
    spec: dict[int, tuple[float, float]]  # bootstrap CI of Δ_concept − Δ_control
    spec_p: dict[int, float]  # one-sided bootstrap p of the specificity
    delta_ctl: dict[int, float]  # mean Δ on the control inputs
    pv: dict[int, tuple[float, int, int]]  # (sequential p, exceedances, null draws used)
    holm: dict[int, float]  # Holm over the tested neurons' p
    spec_holm: dict[int, float]  # Holm over the tested neurons' specificity p
    null: dict[int, list[float]]  # per layer, the null neurons' Δ in sampling order


def decide(delta: float, direction: int, ci: tuple[float, float], spec_p_holm: float | None,
           p_holm: float, alpha: float, min_effect: float, selective: bool) -> tuple[bool, bool, list[str]]:
    """The verdict of one tested neuron: ``(causal, validated, reasons)``.

    ``causal``: the causal criteria alone — Holm p <= alpha against random neurons of the layer, the 95% CI
    of Δ wholly in the tested direction, specific (the concept-minus-control test, Holm-corrected, <= alpha)
    and ``s·Δ >= min_effect``. ``validated``: causal **and** a candidate (or suppressor) of the ranking.
    ``reasons``: every criterion that failed (the candidate gate included).

    Example:
        >>> decide(0.5, 1, (0.3, 0.7), 0.01, 0.01, 0.05, 0.01, True)
        (True, True, [])
        >>> decide(0.5, 1, (0.3, 0.7), 0.01, 0.01, 0.05, 0.01, False)[:2]
        (True, False)
        >>> decide(0.5, 1, (0.3, 0.7), 0.2, 0.01, 0.05, 0.01, True)[2]
        ['not specific: its effect on concept inputs is not beyond its effect on control inputs (Holm p = 0.2 > 0.05)']
    """
    s = 1 if direction >= 0 else -1
    word = "drop" if s > 0 else "rise"
    causal_reasons = []
    if not p_holm <= alpha:
        causal_reasons.append(f"its {word} is not beyond random neurons of its layer (Holm p = {p_holm:.3g} > "
                              f"{alpha:g})")
    lo, hi = ci
    if not (s * lo > 0 and s * hi > 0):
        causal_reasons.append(f"the 95% CI of Δ includes 0 or the other direction (no clear {word})")
    if spec_p_holm is None:
        causal_reasons.append("not specific: no control inputs to compare with")
    elif not spec_p_holm <= alpha:
        causal_reasons.append(f"not specific: its effect on concept inputs is not beyond its effect on control "
                              f"inputs (Holm p = {spec_p_holm:.3g} > {alpha:g})")
    if not s * delta >= min_effect:
        causal_reasons.append(f"|Δ| = {abs(delta):.3g} is below the minimum effect {min_effect:g}"
                              if s * delta >= 0 else f"Δ = {delta:.3g} is in the other direction")
    causal = not causal_reasons
    reasons = ([] if selective else ["not a candidate of the ranking (not FDR-significant and positively "
                                     "selective)"]) + causal_reasons
    return causal, causal and selective, reasons


def verdict_word(causal: bool, validated: bool, direction: int) -> str:
    """The one vocabulary of the three outcomes (console, results.json, page).

    Example:
        >>> [verdict_word(*a) for a in [(True, True, 1), (True, True, -1), (True, False, 1), (False, False, 1)]]
        ['validated', 'validated suppressor', 'causal, not a candidate', 'not causal']
    """
    if validated:
        return "validated suppressor" if direction < 0 else "validated"
    return "causal, not a candidate" if causal else "not causal"


def _opt(x: float) -> float | None:
    """None where a quantity was not measured (NaN) or is infinite (not JSON)."""
    return None if x is None or not math.isfinite(float(x)) else float(x)


def _holm_by_job(p: dict[int, float], jobs: list[int]) -> dict[int, float]:
    """Holm-adjusted ``p`` of ``jobs`` (one family), by job index."""
    if not jobs:
        return {}
    return dict(zip(jobs, holm_adjust(torch.tensor([p[k] for k in jobs], dtype=torch.float64)).tolist()))


def _specificity(d_con: torch.Tensor, d_ctl: torch.Tensor, con_pos: dict[int, int], ctl_pos: dict[int, int],
                 plan: AblationPlan, s: SummarySettings
                 ) -> tuple[dict[int, tuple[float, float]], dict[int, float], dict[int, float]]:
    """Per tested / joint job with control rows: the CI of Δ_concept − Δ_control, its one-sided bootstrap p and
    the mean Δ on the control inputs (all empty without control inputs)."""
    jk = plan.joint
    rows = [k for k in plan.tested + ([jk] if jk is not None else []) if k in ctl_pos]
    if not (rows and d_ctl.shape[1]):
        return {}, {}, {}
    rows_con = d_con[[con_pos[k] for k in rows]]
    rows_ctl = d_ctl[[ctl_pos[k] for k in rows]]
    slo, shi = bootstrap_ci(rows_con, n_boot=s.n_boot, seed=s.seed + 1, minus=rows_ctl)
    spec = {k: (float(slo[n]), float(shi[n])) for n, k in enumerate(rows)}
    delta_ctl = {k: float(d_ctl[ctl_pos[k]].mean()) for k in rows}
    # enough resamples that the smallest p passes Holm's strictest threshold alpha / m
    n_sp = max(s.n_boot, math.ceil(2 * max(len(plan.tested), 1) / s.alpha))
    ps = specificity_p(rows_con, rows_ctl, [plan.jobs[k].direction for k in rows], n_sp, s.seed + 2)
    return spec, {k: float(ps[n]) for n, k in enumerate(rows)}, delta_ctl


def _run_tests(runner: AblationRunner, plan: AblationPlan, delta: np.ndarray, audit: list[int],
               s: SummarySettings) -> _Tests:
    """CIs where they are reported, specificity, the sequential p of every tested / audit / joint job, Holm."""
    d_con = runner.deltas("concept")
    d_ctl = runner.deltas("control")
    con_pos = {k: n for n, k in enumerate(runner.row_index["concept"])}
    ctl_pos = {k: n for n, k in enumerate(runner.row_index["control"])}
    tested, jk = plan.tested, plan.joint
    joint = [jk] if jk is not None else []
    ci_rows = tested + joint + audit  # CIs only where they are reported
    lo, hi = bootstrap_ci(d_con[[con_pos[k] for k in ci_rows]], n_boot=s.n_boot, seed=s.seed)
    ci = {k: (float(lo[n]), float(hi[n])) for n, k in enumerate(ci_rows)}
    spec, spec_p, delta_ctl = _specificity(d_con, d_ctl, con_pos, ctl_pos, plan, s)
    null, units = plan.null_deltas(delta), plan.null_units()
    pv = {k: plan.test(k, delta, null, units) for k in tested + audit + joint}
    holm = _holm_by_job({k: pv[k][0] for k in tested}, tested)
    spec_holm = _holm_by_job(spec_p, [k for k in tested if k in spec_p])
    return _Tests(ci, spec, spec_p, delta_ctl, pv, holm, spec_holm, null)


def _neuron_record(plan: AblationPlan, k: int, delta: np.ndarray, tvals: np.ndarray, t: _Tests,
                   roles: dict[tuple[int, int], int], s: SummarySettings) -> dict[str, Any]:
    """The record of one tested neuron (job ``k``): its Δ, CIs, tests and verdict."""
    j = plan.jobs[k]
    key = (j.layer, j.units[0][1])
    p, g, n_used = t.pv[k]
    selective = roles.get(key, 0) != 0 and (roles[key] == 1) == (j.direction > 0)
    causal, ok, reasons = decide(float(delta[k]), j.direction, t.ci[k], t.spec_holm.get(k), t.holm[k], s.alpha,
                                 s.min_effect, selective)
    dc = t.delta_ctl.get(k)
    return {
        "method": plan.method, "tested_as": j.kind, "direction": "drop" if j.direction > 0 else "rise",
        "direction_rule": plan.rules.get(k, "role"),
        "delta": float(delta[k]), "ci_low": t.ci[k][0], "ci_high": t.ci[k][1], "t": _opt(float(tvals[k])),
        "delta_control": dc, "specificity": None if dc is None else float(delta[k]) - dc,
        "specificity_ci_low": t.spec[k][0] if k in t.spec else None,
        "specificity_ci_high": t.spec[k][1] if k in t.spec else None,
        "specificity_p": t.spec_p.get(k), "specificity_p_holm": t.spec_holm.get(k),
        "p_value": p, "p_holm": float(t.holm[k]), "null_n": n_used, "null_exceedances": g,
        "p_floor": 1.0 / (len(t.null[j.layer]) + 1),
        "causal": causal, "validated": ok,
        "verdict": verdict_word(causal, ok, j.direction),
        "reasons": reasons,
    }


def _small_layer_warnings(plan: AblationPlan, alpha: float) -> list[str]:
    """Layers too small for any tested neuron of theirs to pass Holm, however extreme its Δ."""
    tested = plan.tested
    n_tested = len(tested)
    warnings = []
    for l, order in plan.null_order.items():
        n_avail = len(order)  # the layer's untested neurons: what the null could ever grow to
        if (n_avail + 1) * alpha < max(n_tested, 1) and any(plan.jobs[k].layer == l for k in tested):
            warnings.append(
                f"layer {l} has only {n_avail} other neurons to compare with: the smallest possible p, "
                f"1/{n_avail + 1} = {1 / (n_avail + 1):.3g}, cannot pass the Holm threshold alpha/m = "
                f"{alpha:g}/{n_tested} = {alpha / max(n_tested, 1):.3g}; test fewer neurons (--top-k) to validate any")
    return warnings


def _importance_spearman(result: Any, runner: AblationRunner, plan: AblationPlan, delta: np.ndarray
                         ) -> float | None:
    """Spearman correlation of the ranking's importance estimate with the measured Δ over the single-neuron jobs."""
    if result.scores.importance is None:
        return None
    jobs = plan.jobs
    single = [k for k, j in enumerate(jobs) if j.kind in TESTED + ("null", "audit")]
    # the importance estimate that matches the ablation: mean baseline for mean ablation, else zero
    est = result.scores.importance_mean if plan.method == "mean" else result.scores.importance_zero
    est = result.scores.importance if est is None else est
    imps = [float(est[runner.offsets[jobs[k].units[0][0]] + jobs[k].units[0][1]]) for k in single]
    if len(single) > 2 and np.std(imps) > 0 and np.std(delta[single]) > 0:
        return float(spearmanr(imps, delta[single]).statistic)
    return None


def _audit_summary(plan: AblationPlan, audit: list[int], delta: np.ndarray, t: _Tests, s: SummarySettings
                   ) -> dict[str, Any]:
    """The audit: unimportant-ranked neurons, each tested two-sided; what a random neuron of the layer would give
    under the same rule (|t| beyond the null at alpha and |Δ| >= min_effect) is the expectation by chance."""
    recs = []
    expected = 0.0
    for k in audit:
        p, g, n_used = t.pv[k]
        l = plan.jobs[k].layer
        recs.append({"layer": l, "index": plan.jobs[k].units[0][1], "delta": float(delta[k]),
                     "ci_low": t.ci[k][0], "ci_high": t.ci[k][1], "p_value": p, "tested": "two-sided",
                     "above_null": bool(p <= s.alpha and abs(delta[k]) >= s.min_effect)})
        nt = np.abs(np.asarray(t.null[l]))
        if len(nt):
            thr = np.quantile(nt, 1 - s.alpha)
            expected += float(np.mean((nt > thr) & (nt >= s.min_effect)))
    return {"n_checked": len(audit), "n_above_null": sum(r["above_null"] for r in recs),
            "expected_by_chance": round(expected, 3),
            "definition": ("neurons whose |importance| is in the bottom half of the tested layers, each tested "
                           "two-sided (|t| against the layer's null); above_null = p <= alpha and |Δ| >= "
                           "min_effect; expected_by_chance = the number a random neuron of the same layers "
                           "would reach under the same rule, from the layer's null"),
            "neurons": recs}


def _joint_summary(plan: AblationPlan, delta: np.ndarray, tvals: np.ndarray, t: _Tests, alpha: float
                   ) -> dict[str, Any]:
    """The joint set's Δ, CIs and its test against random sets (``joint_*`` keys; None without a joint set)."""
    jk = plan.joint
    jobs = plan.jobs
    jrec: dict[str, Any] = {}
    if jk is not None:
        jp, jg, jn = t.pv[jk]
        jrec = {"joint_p_null": jp, "joint_null_n": jn, "joint_t": _opt(float(tvals[jk])),
                "joint_beyond_null": bool(jp <= alpha and jobs[jk].direction * t.ci[jk][0] > 0
                                          and jobs[jk].direction * t.ci[jk][1] > 0),
                "joint_direction": "drop" if jobs[jk].direction > 0 else "rise"}
    return {
        "joint_delta": float(delta[jk]) if jk is not None else None,
        "joint_ci_low": t.ci[jk][0] if jk is not None else None,
        "joint_ci_high": t.ci[jk][1] if jk is not None else None,
        "joint_delta_control": t.delta_ctl.get(jk) if jk is not None else None,
        "joint_specificity_ci": list(t.spec[jk]) if jk is not None and jk in t.spec else None,
        "joint_size": len(jobs[jk].units) if jk is not None else 0,
        "joint_p_null": None, "joint_beyond_null": None, **jrec,
    }


def _description(plan: AblationPlan, runner: AblationRunner, s: SummarySettings) -> dict[str, Any]:
    """What was asked, on which inputs, with which statistic and tests (the summary's leading keys)."""
    n_tested = len(plan.tested)
    rules = sorted({plan.rules.get(k, "role") for k in plan.tested})
    return {
        "method": plan.method, "question": QUESTIONS[plan.method], "split": s.split,
        "n_concept_inputs": s.n_concept, "n_control_inputs": s.n_control,
        "y": s.y, "min_effect": s.min_effect, "alpha": s.alpha, "replicas": runner.replicas,
        "statistic": "mean Δ over the held-out concept inputs (t = Δ / its standard error is reported beside it)",
        "test": (f"one-sided empirical p of Δ against random neurons of the same layer under the "
                 f"same intervention, sampled sequentially (Besag-Clifford, h = {plan.h}, up to {plan.n_max} per "
                 f"layer); Holm over all {n_tested} tested neurons together (drops and rises, one family)"),
        "holm_family": f"all {n_tested} tested neurons of this scan (one family)",
        "fwer_bound": (f"P(any tested neuron falsely called beyond the null) <= {s.alpha:g} over the {n_tested} "
                       "tested neurons"),
        "direction_rules": {r: DIRECTION_RULES[r] for r in rules},
        "specificity_test": ("one-sided bootstrap p of s·(mean Δ on concept inputs − mean Δ on control inputs) <= 0, "
                             "the same intervention and the same y on both, Holm over the tested neurons"),
    }


def _null_row(layer: int, vals: np.ndarray, n_layer: int) -> dict[str, Any]:
    """One layer's null distribution of Δ, described."""
    q = np.quantile(vals, [0.05, 0.5, 0.95, 0.99]) if len(vals) else [math.nan] * 4
    return {"layer": layer, "n": int(len(vals)), "n_available": n_layer,
            "mean": float(vals.mean()) if len(vals) else None,
            "std": float(vals.std(ddof=1)) if len(vals) > 1 else None,
            "q05": _opt(q[0]), "median": _opt(q[1]), "q95": _opt(q[2]), "q99": _opt(q[3]),
            "min": float(vals.min()) if len(vals) else None, "max": float(vals.max()) if len(vals) else None,
            "excess_kurtosis": _opt(kurtosis(vals)) if len(vals) > 3 else None}


def empty_summary(plan: AblationPlan, s: SummarySettings) -> dict[str, Any]:
    """The summary of a run with nothing to test (no candidates, suppressors or named neurons)."""
    return {"method": plan.method, "question": QUESTIONS[plan.method], "split": s.split,
            "n_concept_inputs": s.n_concept, "n_control_inputs": s.n_control,
            "min_effect": s.min_effect, "alpha": s.alpha, "y": s.y, "n_tested": 0,
            "n_candidates": 0, "n_suppressors": 0, "n_named": 0, "n_validated": 0, "n_suppressors_validated": 0,
            "n_causal": 0, "n_causal_not_candidate": 0, "n_not_causal": 0,
            "null": [], "joint_delta": None, "joint_ci_low": None, "joint_ci_high": None,
            "joint_delta_control": None, "joint_specificity_ci": None, "joint_p_null": None,
            "joint_beyond_null": None, "importance_delta_spearman": None,
            "audit": None, "warnings": ["nothing to ablate: the ranking has no candidates or suppressors and no "
                                        "neuron was named, so nothing was tested and nothing is validated"]}


def summarize_ablation(result: Any, runner: AblationRunner, plan: AblationPlan, delta: np.ndarray,
                       min_effect: float, alpha: float, n_boot: int, seed: int, split: str, n_concept: int,
                       n_control: int, y: str = "", null_rounds: int = 1) -> None:
    """Statistics of a finished run: CIs, sequential p per tested neuron, Holm, verdicts, joint, audit.

    ``delta`` holds the mean Δ of every job of ``plan.jobs`` on the concept inputs (the runner's jobs first,
    then the null jobs of later rounds): the statistic the p-values compare. Fills ``result.ablation`` (a
    record per tested neuron) and ``result.ablation_summary``.
    """
    s = SummarySettings(min_effect, alpha, n_boot, seed, split, n_concept, n_control, y)
    tvals = runner.t_stats("concept").numpy()  # descriptive: Δ over its standard error, per first-round job
    audit = [k for k, j in enumerate(plan.jobs[:len(runner.jobs)]) if j.kind == "audit"]
    t = _run_tests(runner, plan, delta, audit, s)
    scores = result.scores
    roles = {(int(l), int(i)): r for l, i, r in zip(scores.layer.tolist(), scores.index.tolist(), scores.role.tolist())}
    tested = plan.tested
    records = {(plan.jobs[k].layer, plan.jobs[k].units[0][1]): _neuron_record(plan, k, delta, tvals, t, roles, s)
               for k in tested}
    result.ablation = records
    kinds = [plan.jobs[k].kind for k in tested]
    n_causal = sum(int(r["causal"]) for r in records.values())
    n_valid = sum(int(r["validated"]) for r in records.values())
    result.ablation_summary = {
        **_description(plan, runner, s),
        "n_tested": len(tested), "n_candidates": kinds.count("candidate"), "n_suppressors": kinds.count("suppressor"),
        "n_named": kinds.count("named"), "null_needed": plan.n_max, "null_rounds": null_rounds,
        "null": [_null_row(l, np.array(v), len(plan.null_order[l])) for l, v in t.null.items()],
        **_joint_summary(plan, delta, tvals, t, alpha),
        "importance_delta_spearman": _importance_spearman(result, runner, plan, delta),
        "audit": _audit_summary(plan, audit, delta, t, s),
        "n_validated": sum(int(r["validated"]) for r in records.values() if r["direction"] == "drop"),
        "n_suppressors_validated": sum(int(r["validated"]) for r in records.values() if r["direction"] == "rise"),
        "n_causal": n_causal, "n_causal_not_candidate": n_causal - n_valid, "n_not_causal": len(tested) - n_causal,
        "warnings": _small_layer_warnings(plan, alpha),
    }
