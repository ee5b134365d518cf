"""Pin every streaming score to hand-computed values and to independent numpy/scipy references.

Covers ``neurolens_lightning.functional`` and ``neurolens_lightning.metrics``
(Selectivity, Consistency, Importance, MeanActivation, TopActivations) and the probe head.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy import stats

from neurolens_lightning.functional import consistency as consistency_fn
from neurolens_lightning.functional import importance as importance_fn
from neurolens_lightning.functional import selectivity as selectivity_fn
from neurolens_lightning.metrics import Consistency, Importance, MeanActivation, Selectivity, TopActivations
from neurolens_lightning.probe_head import ProbeHead, fit_probe_head

EPS = 1e-8
SQRT2 = math.sqrt(2.0)


# ----------------------------------------------------------------------------------------------
# helpers
# ----------------------------------------------------------------------------------------------

def _random_batches(n: int, rng: np.random.Generator, max_size: int = 17) -> list[slice]:
    """Split range(n) into consecutive slices of random sizes in [1, max_size]."""
    out, start = [], 0
    while start < n:
        size = int(rng.integers(1, max_size + 1))
        out.append(slice(start, min(n, start + size)))
        start += size
    return out


def _state_numel(metric) -> dict[str, int]:
    return {k: (v.numel() if torch.is_tensor(v) else sum(t.numel() for t in v)) for k, v in metric.metric_state.items()}


def _np_cohens_d(pos: np.ndarray, neg: np.ndarray, eps: float = EPS) -> np.ndarray:
    """Independent reference: Cohen's d with unbiased variances (ddof=1), per column."""
    return (pos.mean(0) - neg.mean(0)) / np.sqrt((pos.var(0, ddof=1) + neg.var(0, ddof=1)) / 2 + eps)


def _np_consistency(acts: np.ndarray, groups: np.ndarray, num_groups: int, eps: float = EPS) -> np.ndarray:
    """Independent reference of DESIGN §2 consistency (population std over the present groups)."""
    neg = acts[groups < 0]
    d_g = []
    for g in range(num_groups):
        pos = acts[groups == g]
        if len(pos) == 0:
            continue  # a group with no examples is skipped
        var_p = pos.var(0, ddof=1) if len(pos) > 1 else np.zeros(acts.shape[1])
        d_g.append((pos.mean(0) - neg.mean(0)) / np.sqrt((var_p + neg.var(0, ddof=1)) / 2 + eps))
    d_g = np.stack(d_g)
    m, s = d_g.mean(0), d_g.std(0, ddof=0)
    with np.errstate(divide="ignore", invalid="ignore"):
        c = np.clip(1 - s / m, 0, 1)
    return np.where(m > 0, c, 0.0)


# ----------------------------------------------------------------------------------------------
# Selectivity
# ----------------------------------------------------------------------------------------------

def _hand_selectivity_data():
    """4 rows (2 positive, 2 negative) x 4 neurons, every value worked out below.

    neuron 0: pos [2, 4], neg [0, 2]. mean_P = 3, mean_N = 1, var_P = var_N = ((-1)^2 + 1^2) / 1 = 2
              d = (3 - 1) / sqrt((2 + 2) / 2 + eps) = 2 / sqrt(2) = sqrt(2)
              Welch: se^2 = 2/2 + 2/2 = 2, t = 2 / sqrt(2) = sqrt(2),
              df = se^4 / ((2/2)^2 / 1 + (2/2)^2 / 1) = 4 / 2 = 2.
              Student t with 2 dof: sf(t) = (1 - t / sqrt(t^2 + 2)) / 2 -> sf(sqrt 2) = (1 - 1/sqrt 2) / 2
              p = 2 sf = 1 - 1/sqrt(2)
    neuron 1: pos [0, 2], neg [2, 4] -> mirror image: d = -sqrt(2) (signed), same p.
    neuron 2: pos [1, 1], neg [1, 1] -> zero variance, equal means: d = 0 / sqrt(eps) = 0, p = 1.
    neuron 3: pos [3, 3], neg [1, 1] -> zero variance, different means: d = 2 / sqrt(eps) = 2e4, p = 0.
    """
    acts = torch.tensor([
        [2.0, 0.0, 1.0, 3.0],   # positive
        [4.0, 2.0, 1.0, 3.0],   # positive
        [0.0, 2.0, 1.0, 1.0],   # negative
        [2.0, 4.0, 1.0, 1.0],   # negative
    ], dtype=torch.float64)
    is_pos = torch.tensor([True, True, False, False])
    d = [SQRT2, -SQRT2, 0.0, 2.0 / math.sqrt(EPS)]
    p = [1 - 1 / SQRT2, 1 - 1 / SQRT2, 1.0, 0.0]
    return acts, is_pos, d, p


def test_selectivity_hand_computed_values():
    acts, is_pos, d_ref, p_ref = _hand_selectivity_data()
    m = Selectivity(num_neurons=4)
    m.update(acts, is_pos)
    out = m.compute()
    # eps shifts d of neurons 0/1 by a relative ~2.5e-9 only
    assert out["d"].tolist() == pytest.approx(d_ref, rel=1e-8)
    assert out["p_value"].tolist() == pytest.approx(p_ref, abs=1e-12)
    assert out["t"][0].item() == pytest.approx(SQRT2, rel=1e-12)
    assert out["t"][1].item() == pytest.approx(-SQRT2, rel=1e-12)
    assert out["mean_pos"].tolist() == [3.0, 1.0, 1.0, 3.0]
    assert out["mean_neg"].tolist() == [1.0, 3.0, 1.0, 1.0]
    assert out["n_pos"].item() == 2 and out["n_neg"].item() == 2
    assert out["d"].dtype == torch.float64 and out["p_value"].dtype == torch.float64
    # the pure functional path gives the same numbers
    d_fn, p_fn = selectivity_fn(acts, is_pos)
    torch.testing.assert_close(d_fn, out["d"], rtol=0, atol=1e-12)
    torch.testing.assert_close(p_fn, out["p_value"], rtol=0, atol=1e-12)


def test_selectivity_hand_computed_unequal_sizes_and_eps():
    """pos [1, 2, 3, 6]: mean 3, var (4 + 1 + 0 + 9) / 3 = 14/3; neg [0, 1, 2]: mean 1, var 1.

    d = (3 - 1) / sqrt((14/3 + 1) / 2 + eps) = 2 / sqrt(17/6 + eps).
    With eps = 0.5 the denominator becomes sqrt(17/6 + 1/2) = sqrt(10/3).
    """
    acts = torch.tensor([[1.0], [2.0], [3.0], [6.0], [0.0], [1.0], [2.0]])
    is_pos = torch.tensor([1, 1, 1, 1, 0, 0, 0]).bool()
    m = Selectivity(num_neurons=1)
    m.update(acts, is_pos)
    out = m.compute()
    assert out["d"].item() == pytest.approx(2 / math.sqrt(17 / 6), rel=1e-8)
    ref = stats.ttest_ind([1.0, 2, 3, 6], [0.0, 1, 2], equal_var=False)
    assert out["p_value"].item() == pytest.approx(ref.pvalue, rel=1e-10)
    assert out["t"].item() == pytest.approx(ref.statistic, rel=1e-10)

    m_eps = Selectivity(num_neurons=1, eps=0.5)
    m_eps.update(acts, is_pos)
    assert m_eps.compute()["d"].item() == pytest.approx(2 / math.sqrt(10 / 3), rel=1e-12)


def test_selectivity_matches_scipy_welch_on_random_data():
    rng = np.random.default_rng(0)
    n_pos, n_neg, units = 37, 53, 64
    scale_p = rng.uniform(0.2, 3.0, units)
    scale_n = rng.uniform(0.2, 3.0, units)
    shift = rng.normal(0, 1.0, units)
    pos = rng.normal(0, 1, (n_pos, units)) * scale_p + shift + 5.0
    neg = rng.normal(0, 1, (n_neg, units)) * scale_n + 5.0
    acts = np.concatenate([pos, neg])
    is_pos = np.r_[np.ones(n_pos, bool), np.zeros(n_neg, bool)]
    perm = rng.permutation(len(acts))
    acts, is_pos = acts[perm], is_pos[perm]

    m = Selectivity(num_neurons=units)
    for sl in _random_batches(len(acts), rng):
        m.update(torch.from_numpy(acts[sl]).float(), torch.from_numpy(is_pos[sl]))
    out = m.compute()

    # float32 inputs -> compare against scipy on the same float32-rounded values
    a32 = acts.astype(np.float32).astype(np.float64)
    ref = stats.ttest_ind(a32[is_pos], a32[~is_pos], equal_var=False)
    np.testing.assert_allclose(out["p_value"].numpy(), ref.pvalue, rtol=1e-6)
    np.testing.assert_allclose(out["t"].numpy(), ref.statistic, rtol=1e-6)
    np.testing.assert_allclose(out["d"].numpy(), _np_cohens_d(a32[is_pos], a32[~is_pos]), rtol=1e-9)
    # sanity: the data spans both significant and non-significant neurons, both signs of d
    assert (out["p_value"] < 1e-3).any() and (out["p_value"] > 0.05).any()
    assert (out["d"] > 0).any() and (out["d"] < 0).any()


def test_selectivity_tiny_p_values_match_scipy():
    """Very strong effects: p-values far below 1e-6 must still be accurate (not 0 or 1 - 1e-16)."""
    rng = np.random.default_rng(1)
    pos = rng.normal(4.0, 1.0, (40, 5)) * np.arange(1, 6)
    neg = rng.normal(0.0, 1.0, (30, 5))
    m = Selectivity(num_neurons=5)
    m.update(torch.from_numpy(np.concatenate([pos, neg])), torch.tensor([True] * 40 + [False] * 30))
    out = m.compute()
    ref = stats.ttest_ind(pos, neg, equal_var=False).pvalue
    assert (ref < 1e-10).all()
    np.testing.assert_allclose(out["p_value"].numpy(), ref, rtol=1e-6)


def test_selectivity_degenerate_zero_variance():
    acts = torch.tensor([[5.0, 7.0, 0.0], [5.0, 7.0, 0.0], [5.0, 1.0, 2.0], [5.0, 1.0, 2.0], [5.0, 1.0, 2.0]])
    is_pos = torch.tensor([True, True, False, False, False])
    m = Selectivity(num_neurons=3)
    m.update(acts, is_pos)
    out = m.compute()
    # neuron 0: constant everywhere -> d = 0, p = 1, t = 0
    assert out["d"][0].item() == 0.0 and out["p_value"][0].item() == 1.0 and out["t"][0].item() == 0.0
    # neuron 1: pos all 7, neg all 1 -> d = 6 / sqrt(eps), p = 0, t = +inf
    assert out["d"][1].item() == pytest.approx(6 / math.sqrt(EPS), rel=1e-12)
    assert out["p_value"][1].item() == 0.0 and out["t"][1].item() == math.inf
    # neuron 2: pos all 0, neg all 2 -> negative d, p = 0, t = -inf
    assert out["d"][2].item() == pytest.approx(-2 / math.sqrt(EPS), rel=1e-12)
    assert out["p_value"][2].item() == 0.0 and out["t"][2].item() == -math.inf
    assert torch.isfinite(out["d"]).all() and not torch.isnan(out["p_value"]).any()


def test_selectivity_signed():
    """A neuron that fires on the negatives gets a negative d of the same magnitude."""
    rng = np.random.default_rng(2)
    x = rng.normal(0, 1, (30, 1))
    acts = torch.from_numpy(np.concatenate([x + 2, x], axis=0))
    lab = torch.tensor([True] * 30 + [False] * 30)
    m1, m2 = Selectivity(1), Selectivity(1)
    m1.update(acts, lab)
    m2.update(acts, ~lab)
    o1, o2 = m1.compute(), m2.compute()
    assert o1["d"].item() > 0
    assert o2["d"].item() == pytest.approx(-o1["d"].item(), rel=1e-12)
    assert o2["p_value"].item() == pytest.approx(o1["p_value"].item(), rel=1e-12)


def test_selectivity_streaming_invariant_to_batching_and_order():
    rng = np.random.default_rng(3)
    acts = rng.normal(0, 1, (203, 16)) * rng.uniform(0.5, 2, 16) + rng.normal(0, 3, 16)
    lab = rng.random(203) < 0.4
    acts[lab] += 0.7
    at, lt = torch.from_numpy(acts), torch.from_numpy(lab)

    one = Selectivity(16)
    one.update(at, lt)
    ref = one.compute()

    many = Selectivity(16)
    for sl in _random_batches(203, rng):
        many.update(at[sl], lt[sl])

    perm = torch.from_numpy(rng.permutation(203))
    shuffled = Selectivity(16)
    for sl in _random_batches(203, rng, max_size=5):
        shuffled.update(at[perm][sl], lt[perm][sl])

    for other in (many.compute(), shuffled.compute()):
        for key in ("d", "p_value", "t", "mean_pos", "mean_neg", "n_pos", "n_neg"):
            torch.testing.assert_close(other[key], ref[key], rtol=0, atol=1e-10)


def test_selectivity_state_size_constant_and_reset():
    rng = np.random.default_rng(4)
    m = Selectivity(8)
    m.update(torch.from_numpy(rng.normal(size=(4, 8))), torch.tensor([1, 0, 1, 0]).bool())
    size_after_one = _state_numel(m)
    for _ in range(60):
        m.update(torch.from_numpy(rng.normal(size=(11, 8))), torch.from_numpy(rng.random(11) < 0.5))
    assert _state_numel(m) == size_after_one
    assert sum(size_after_one.values()) == 2 + 2 * 8 * 2  # counts [2] + sum/sumsq [2, U]
    m.reset()
    assert m.count.sum().item() == 0


@pytest.mark.parametrize("n_pos,n_neg", [(1, 5), (5, 1), (0, 3), (3, 0), (0, 0)])
def test_selectivity_too_few_examples_raises(n_pos, n_neg):
    m = Selectivity(2)
    if n_pos + n_neg:
        m.update(torch.ones(n_pos + n_neg, 2), torch.tensor([True] * n_pos + [False] * n_neg))
    with pytest.raises(ValueError, match=r">= 2 positive and >= 2 negative"):
        m.compute()


# ----------------------------------------------------------------------------------------------
# Consistency
# ----------------------------------------------------------------------------------------------

def test_consistency_hand_computed_three_groups():
    """Negatives N = [0, 2]: mean 1, var 2. Three groups of two examples, each with var 2.

    neuron 0 (graded):  g0 [3, 5] -> d0 = (4 - 1) / sqrt((2 + 2)/2) = 3/sqrt2
                        g1 [2, 4] -> d1 = 2/sqrt2,  g2 [1, 3] -> d2 = 1/sqrt2
        mean_g d = 2/sqrt2 = sqrt2;  std_g (population) = sqrt(((3-2)^2 + 0 + (1-2)^2) / 3) / sqrt2
                 = sqrt(2/3) / sqrt2 = 1/sqrt3
        consistency = 1 - (1/sqrt3) / sqrt2 = 1 - 1/sqrt6 ~= 0.5918
    neuron 1 (equal):   all groups [3, 5] -> d_g = 3/sqrt2 each -> std 0 -> consistency 1
    neuron 2 (mixed):   g0 [3, 5] d=3/sqrt2, g1 [-1, 1] d=-1/sqrt2, g2 [1, 3] d=1/sqrt2
        mean = 1/sqrt2, std = sqrt((4 + 4 + 0)/3)/sqrt2 = 2/sqrt3 * 1/sqrt2  -> 1 - 2/sqrt3 < 0 -> clip 0
    neuron 3 (negative): groups [-2, 0], [-1, 1], [0, 2] -> d = -2/sqrt2, -1/sqrt2, 0 -> mean < 0 -> 0
    """
    groups = torch.tensor([0, 0, 1, 1, 2, 2, -1, -1])
    acts = torch.tensor([
        # n0   n1   n2    n3
        [3.0, 3.0, 3.0, -2.0],
        [5.0, 5.0, 5.0, 0.0],
        [2.0, 3.0, -1.0, -1.0],
        [4.0, 5.0, 1.0, 1.0],
        [1.0, 3.0, 1.0, 0.0],
        [3.0, 5.0, 3.0, 2.0],
        [0.0, 0.0, 0.0, 0.0],   # negative
        [2.0, 2.0, 2.0, 2.0],   # negative
    ], dtype=torch.float64)
    m = Consistency(num_neurons=4, num_groups=3)
    m.update(acts, groups)
    out = m.compute()
    expected = [1 - 1 / math.sqrt(6), 1.0, 0.0, 0.0]
    assert out["consistency"].tolist() == pytest.approx(expected, abs=1e-12)
    d = 1 / math.sqrt(2 + EPS)  # one unit of mean difference in the common denominator
    expected_d = [[3 * d, 3 * d, 3 * d, -2 * d],
                  [2 * d, 3 * d, -1 * d, -1 * d],
                  [1 * d, 3 * d, 1 * d, 0.0]]
    torch.testing.assert_close(out["group_d"], torch.tensor(expected_d, dtype=torch.float64), rtol=1e-12, atol=1e-12)
    assert out["group_count"].tolist() == [2.0, 2.0, 2.0]
    # functional path
    torch.testing.assert_close(consistency_fn(acts, groups, 3), out["consistency"], rtol=0, atol=1e-12)


def test_consistency_one_group_only_is_near_zero_and_equal_groups_near_one():
    """DESIGN §2: firing for 'king' only among K=4 -> ~0; equally for all four -> ~1."""
    rng = np.random.default_rng(5)
    k, n_g, n_neg = 4, 250, 400
    groups = np.r_[np.repeat(np.arange(k), n_g), -np.ones(n_neg, int)]
    noise = rng.normal(0, 1, (len(groups), 2))
    acts = noise.copy()
    acts[groups == 0, 0] += 3.0          # neuron 0: one group only
    acts[groups >= 0, 1] += 3.0          # neuron 1: every group equally
    m = Consistency(num_neurons=2, num_groups=k)
    m.update(torch.from_numpy(acts), torch.from_numpy(groups))
    out = m.compute()
    assert out["consistency"][0].item() < 0.05
    assert out["consistency"][1].item() > 0.95
    # and the selectivity of neuron 0 is still clearly positive: consistency, not selectivity, tells them apart
    assert out["group_d"][0, 0].item() > 2.5


def test_consistency_identical_groups_exactly_one():
    base = torch.tensor([[1.0], [2.0], [4.0]])
    acts = torch.cat([base, base, base, base, torch.tensor([[0.0], [1.0], [-1.0]])])
    groups = torch.tensor([0] * 3 + [1] * 3 + [2] * 3 + [3] * 3 + [-1] * 3)
    m = Consistency(1, 4)
    m.update(acts, groups)
    assert m.compute()["consistency"].item() == pytest.approx(1.0, abs=1e-12)


def test_consistency_nonpositive_mean_is_zero():
    """mean_g(d_g) <= 0 -> 0, including exactly 0 (no division by zero, no NaN)."""
    acts = torch.tensor([[1.0, 0.0], [1.0, 2.0], [1.0, -1.0], [1.0, 1.0], [1.0, 0.0], [1.0, 2.0]])
    groups = torch.tensor([0, 0, 1, 1, -1, -1])
    # neuron 0: constant -> all d_g = 0 -> mean 0 -> 0
    # neuron 1: g0 [0, 2] d=0, g1 [-1, 1] d=-1/sqrt2, neg [0, 2] -> mean < 0 -> 0
    m = Consistency(2, 2)
    m.update(acts, groups)
    out = m.compute()["consistency"]
    assert out.tolist() == [0.0, 0.0]
    assert not torch.isnan(out).any()


def test_consistency_empty_group_is_skipped():
    """K=4 with group 3 never seen == K=3 on the same data (and group_count reports the 0)."""
    rng = np.random.default_rng(6)
    groups = np.r_[np.repeat([0, 1, 2], 20), -np.ones(30, int)]
    acts = rng.normal(0, 1, (len(groups), 6)) + (groups >= 0)[:, None] * rng.uniform(0, 2, 6)
    a, g = torch.from_numpy(acts), torch.from_numpy(groups)
    m3, m4 = Consistency(6, 3), Consistency(6, 4)
    m3.update(a, g)
    m4.update(a, g)
    o3, o4 = m3.compute(), m4.compute()
    torch.testing.assert_close(o4["consistency"], o3["consistency"], rtol=0, atol=1e-12)
    assert o4["group_count"].tolist() == [20.0, 20.0, 20.0, 0.0]
    assert (o3["consistency"] > 0).any()


def test_consistency_matches_numpy_reference_and_streams():
    rng = np.random.default_rng(7)
    k, units = 5, 40
    groups = rng.integers(-1, k - 1, 300)           # groups 0..3 present, group 4 empty, -1 negatives
    acts = rng.normal(0, 1, (300, units)) * rng.uniform(0.5, 2, units)
    effect = rng.normal(0.8, 0.8, (k, units))        # per group, per neuron effect
    for gi in range(k):
        acts[groups == gi] += effect[gi]
    ref = _np_consistency(acts, groups, k)
    assert (ref > 0).sum() >= 5 and (ref == 0).sum() >= 1 and (ref < 1).all()

    m = Consistency(units, k)
    for sl in _random_batches(300, rng):
        m.update(torch.from_numpy(acts[sl]), torch.from_numpy(groups[sl]))
    np.testing.assert_allclose(m.compute()["consistency"].numpy(), ref, rtol=0, atol=1e-10)

    perm = rng.permutation(300)
    m2 = Consistency(units, k)
    m2.update(torch.from_numpy(acts[perm]), torch.from_numpy(groups[perm]))
    torch.testing.assert_close(m2.compute()["consistency"], m.compute()["consistency"], rtol=0, atol=1e-10)
    # constant memory
    assert _state_numel(m) == _state_numel(Consistency(units, k))


# ----------------------------------------------------------------------------------------------
# Importance
# ----------------------------------------------------------------------------------------------

def _importance(act_grad, grad, baseline=None):
    """A fresh Importance metric per baseline (see test_importance_compute_baseline_not_stale_cache)."""
    m = Importance(act_grad.shape[1])
    m.update(act_grad, grad)
    return m.compute(baseline=baseline)


def test_importance_hand_computed_linear_toy():
    """y(x) = sum_positions w . a_p with w = [1, -1] -> dy/da_{p,u} = w_u at every position.

    example 1: a = [[1, 2], [3, 4]] -> sum_p a*g = [1 + 3, -(2 + 4)] = [4, -6], sum_p g = [2, -2]
    example 2: a = [[0, 1], [2, 0]] -> sum_p a*g = [0 + 2, -(1 + 0)] = [2, -1], sum_p g = [2, -2]
    mean_ag = [3, -3.5], mean_g = [2, -2]
    zero baseline:           importance = [3, -3.5]
    baseline b = [1, 1]:     importance = [3 - 1*2, -3.5 - 1*(-2)] = [1, -1.5]
    b = mean activation over all 4 positions = [6/4, 7/4]: [3 - 1.5*2, -3.5 + 1.75*2] = [0, 0]
    """
    w = torch.tensor([1.0, -1.0])
    a = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 1.0], [2.0, 0.0]]], requires_grad=True)
    y = (a * w).sum(dim=(1, 2))                      # per-example confidence
    (g,) = torch.autograd.grad(y.sum(), a)
    torch.testing.assert_close(g, w.expand_as(a))    # analytic dy/da
    ag, gs = (a * g).sum(1).detach(), g.sum(1)
    out = _importance(ag, gs, baseline=torch.tensor([1.0, 1.0]))
    assert out["zero"].tolist() == [3.0, -3.5]
    assert out["mean_act_grad"].tolist() == [3.0, -3.5]
    assert out["mean_grad"].tolist() == [2.0, -2.0]
    assert out["mean"].tolist() == [1.0, -1.5]

    mean_act = MeanActivation(2)
    mean_act.update(a.detach().sum(dim=(0, 1)), a.shape[0] * a.shape[1])
    assert mean_act.compute().tolist() == [1.5, 1.75]
    assert _importance(ag, gs, baseline=mean_act.compute())["mean"].tolist() == [0.0, 0.0]
    assert "mean" not in _importance(ag, gs)
    # functional form: importance = mean_ag - b * mean_g
    assert importance_fn(torch.tensor([3.0, -3.5]), torch.tensor([2.0, -2.0]), 1.0).tolist() == [1.0, -1.5]


def test_importance_hand_computed_quadratic_toy():
    """y(x) = sum_p (w . a_p)^2 -> dy/da_{p,u} = 2 (w . a_p) w_u (checked against autograd).

    single example, w = [1, 2], a = [[1, 1], [0, 1]]:
      w . a_0 = 3 -> g_0 = [6, 12];  w . a_1 = 2 -> g_1 = [4, 8]
      sum_p a*g = [1*6 + 0*4, 1*12 + 1*8] = [6, 20],  sum_p g = [10, 20]
      mean baseline b = [0.5, 1]: importance = [6 - 5, 20 - 20] = [1, 0]
    """
    w = torch.tensor([1.0, 2.0], dtype=torch.float64)
    a = torch.tensor([[[1.0, 1.0], [0.0, 1.0]]], dtype=torch.float64, requires_grad=True)
    y = ((a * w).sum(-1) ** 2).sum(-1)
    (g,) = torch.autograd.grad(y.sum(), a)
    assert g[0].tolist() == [[6.0, 12.0], [4.0, 8.0]]
    m = Importance(2)
    m.update((a * g).sum(1).detach(), g.sum(1))
    out = m.compute(baseline=torch.tensor([0.5, 1.0]))
    assert out["zero"].tolist() == [6.0, 20.0]
    assert out["mean"].tolist() == [1.0, 0.0]


def _toy_model(seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    w1 = torch.randn(5, 6, generator=gen, dtype=torch.float64)   # input dim 5 -> 6 neurons
    w2 = torch.randn(6, generator=gen, dtype=torch.float64)
    c = 0.3

    def acts_of(x):                                   # nonlinear below the neuron site
        return torch.relu(x @ w1)                     # [B, P, U]

    def y_of(a):                                      # LINEAR above the site
        return (a @ w2).sum(-1) + c                   # [B]

    return acts_of, y_of


def test_importance_equals_exact_ablation_for_linear_y():
    """For y linear in a, the first-order estimate is exact: importance == mean_x [y(x) - y_ablated(x)]."""
    acts_of, y_of = _toy_model()
    gen = torch.Generator().manual_seed(1)
    x = torch.randn(9, 4, 5, generator=gen, dtype=torch.float64)    # 9 examples, 4 positions
    ref_x = torch.randn(13, 4, 5, generator=gen, dtype=torch.float64)

    # reference mean activation from a separate reference set, per position
    mean_act = MeanActivation(6)
    ra = acts_of(ref_x)
    mean_act.update(ra.sum(dim=(0, 1)), ra.shape[0] * ra.shape[1])
    b = mean_act.compute()

    imp = Importance(6)
    for sl in (slice(0, 2), slice(2, 7), slice(7, 9)):   # streamed
        a = acts_of(x[sl]).detach().requires_grad_(True)
        (g,) = torch.autograd.grad(y_of(a).sum(), a)
        imp.update((a * g).sum(1), g.sum(1))
    out = imp.compute(baseline=b)

    a = acts_of(x)
    y = y_of(a)
    for u in range(6):
        zeroed = a.clone()
        zeroed[..., u] = 0.0
        meaned = a.clone()
        meaned[..., u] = b[u]
        assert out["zero"][u].item() == pytest.approx((y - y_of(zeroed)).mean().item(), abs=1e-12)
        assert out["mean"][u].item() == pytest.approx((y - y_of(meaned)).mean().item(), abs=1e-12)
    assert (out["zero"].abs() > 1e-3).all()


def test_importance_compute_baseline_not_stale_cache():
    m = Importance(2)
    m.update(torch.tensor([[3.0, -3.5]]), torch.tensor([[2.0, -2.0]]))
    assert "mean" not in m.compute()
    assert m.compute(baseline=torch.tensor([1.0, 1.0]))["mean"].tolist() == [1.0, -1.5]
    assert m.compute(baseline=torch.tensor([1.5, 1.75]))["mean"].tolist() == [0.0, 0.0]


def test_importance_streaming_and_state_size():
    rng = np.random.default_rng(8)
    ag, g = rng.normal(size=(50, 7)), rng.normal(size=(50, 7))
    one = Importance(7)
    one.update(torch.from_numpy(ag), torch.from_numpy(g))
    size = _state_numel(one)
    many = Importance(7)
    for sl in _random_batches(50, rng, max_size=6):
        many.update(torch.from_numpy(ag[sl]).float(), torch.from_numpy(g[sl]).float())
    assert _state_numel(many) == size
    o1, o2 = one.compute(), many.compute()
    np.testing.assert_allclose(o1["zero"].numpy(), ag.mean(0), atol=1e-12)
    torch.testing.assert_close(o2["zero"], o1["zero"], rtol=0, atol=1e-6)  # float32 inputs in `many`
    assert one.n.item() == 50


# ----------------------------------------------------------------------------------------------
# MeanActivation / TopActivations
# ----------------------------------------------------------------------------------------------

def test_mean_activation_scalar_and_per_neuron_counts():
    # scalar counts: totals [2, 4] over 2 positions + [1, 1] over 3 positions -> [3, 5] / 5
    m = MeanActivation(2)
    m.update(torch.tensor([2.0, 4.0]), 2)
    m.update(torch.tensor([1.0, 1.0]), 3)
    assert m.compute().tolist() == pytest.approx([0.6, 1.0], abs=1e-15)
    # per-neuron counts: totals [3, 5] over counts [2 + 1, 4 + 4] = [3, 8] -> [1, 0.625]
    m = MeanActivation(2)
    m.update(torch.tensor([2.0, 4.0]), torch.tensor([2, 4]))
    m.update(torch.tensor([1.0, 1.0]), torch.tensor([1.0, 4.0]))
    assert m.compute().tolist() == [1.0, 0.625]
    assert m.compute().dtype == torch.float64
    # a neuron never seen has mean 0, not NaN
    m = MeanActivation(2)
    m.update(torch.tensor([3.0, 0.0]), torch.tensor([2, 0]))
    assert m.compute().tolist() == [1.5, 0.0]


def _np_topk(acts: np.ndarray, ids: np.ndarray, pos: np.ndarray, k: int):
    order = np.argsort(-acts, axis=0, kind="stable")[:k]
    return (np.take_along_axis(acts, order, 0), ids[order],
            np.take_along_axis(pos, order, 0))


def test_top_activations_true_top_k_across_batches():
    rng = np.random.default_rng(9)
    n, units, k = 97, 6, 4
    acts = rng.normal(size=(n, units)).astype(np.float32)
    ids = rng.permutation(1000)[:n]                      # arbitrary, non-contiguous ids
    pos = rng.integers(0, 30, (n, units))
    m = TopActivations(num_neurons=units, k=k)
    size = _state_numel(m)
    for sl in _random_batches(n, rng, max_size=9):
        m.update(torch.from_numpy(acts[sl]), torch.from_numpy(ids[sl]), torch.from_numpy(pos[sl]))
    assert _state_numel(m) == size                      # constant memory
    out = m.compute()
    v, i, p = _np_topk(acts, ids, pos, k)
    assert out["values"].shape == (k, units)
    np.testing.assert_array_equal(out["values"].numpy(), v)
    np.testing.assert_array_equal(out["example_ids"].numpy(), i)
    np.testing.assert_array_equal(out["positions"].numpy(), p)


def test_top_activations_fewer_examples_than_k():
    m = TopActivations(num_neurons=2, k=3)
    m.update(torch.tensor([[1.0, -2.0], [5.0, -1.0]]), torch.tensor([10, 11]), torch.tensor([[0, 1], [2, 3]]))
    out = m.compute()
    assert out["values"][:, 0].tolist() == [5.0, 1.0, -math.inf]
    assert out["values"][:, 1].tolist() == [-1.0, -2.0, -math.inf]
    assert out["example_ids"].tolist() == [[11, 11], [10, 10], [-1, -1]]
    assert out["positions"][:2].tolist() == [[2, 3], [0, 1]]


def test_top_activations_merge_state():
    """merge_state (the same reduction as DDP 'cat') still returns the true top-k."""
    rng = np.random.default_rng(10)
    acts, ids, pos = rng.normal(size=(40, 3)), np.arange(40), rng.integers(0, 5, (40, 3))
    a, b = TopActivations(3, k=5), TopActivations(3, k=5)
    a.update(torch.from_numpy(acts[:25]), torch.from_numpy(ids[:25]), torch.from_numpy(pos[:25]))
    b.update(torch.from_numpy(acts[25:]), torch.from_numpy(ids[25:]), torch.from_numpy(pos[25:]))
    a.merge_state(b)
    out = a.compute()
    v, i, p = _np_topk(acts.astype(np.float32), ids, pos, 5)
    np.testing.assert_array_equal(out["values"].numpy(), v)
    np.testing.assert_array_equal(out["example_ids"].numpy(), i)
    np.testing.assert_array_equal(out["positions"].numpy(), p)


def test_forward_keeps_sum_states_constant_and_matches_update():
    """metric(batch) (torchmetrics forward) accumulates exactly like update(), in constant memory."""
    rng = np.random.default_rng(11)
    acts = torch.from_numpy(rng.normal(size=(60, 4)))
    groups = torch.from_numpy(np.tile([0, 1, -1, -1, 0, 1], 10))
    fwd = [Selectivity(4), Consistency(4, 2), MeanActivation(4), Importance(4)]
    upd = [Selectivity(4), Consistency(4, 2), MeanActivation(4), Importance(4)]
    sizes = [_state_numel(m) for m in fwd]
    for b in range(10):
        a, g = acts[6 * b:6 * b + 6], groups[6 * b:6 * b + 6]
        args = [(a, g >= 0), (a, g), (a.sum(0), 6), (a, a * 2)]
        for m_f, m_u, arg in zip(fwd, upd, args):
            m_f(*arg)
            m_u.update(*arg)
    assert [_state_numel(m) for m in fwd] == sizes
    for m_f, m_u in zip(fwd, upd):
        f, u = m_f.compute(), m_u.compute()
        if isinstance(u, dict):
            _ = [torch.testing.assert_close(f[k], u[k], rtol=0, atol=1e-12) for k in u]
        else:
            torch.testing.assert_close(f, u, rtol=0, atol=1e-12)


def test_top_activations_forward_constant_memory():
    m = TopActivations(3, k=2)
    for b in range(5):
        m(torch.randn(4, 3), torch.arange(4) + 4 * b, torch.zeros(4, 3, dtype=torch.long))
    assert m.values.shape == (2, 3)


# ----------------------------------------------------------------------------------------------
# Probe head
# ----------------------------------------------------------------------------------------------

def test_fit_probe_head_separable_data():
    gen = torch.Generator().manual_seed(0)
    direction = torch.tensor([1.0, -1.0, 0.5, 0.0, 2.0])
    pos = torch.randn(40, 5, generator=gen) * 0.5 + 3 * direction
    neg = torch.randn(40, 5, generator=gen) * 0.5 - 3 * direction
    feats = torch.cat([pos, neg])
    labels = torch.cat([torch.ones(40), torch.zeros(40)])
    head = fit_probe_head(feats, labels)
    assert isinstance(head, ProbeHead)
    assert head.heldout_accuracy == 1.0 and head.train_accuracy == 1.0

    fresh_pos = torch.randn(25, 5, generator=gen) * 0.5 + 3 * direction
    fresh_neg = torch.randn(25, 5, generator=gen) * 0.5 - 3 * direction
    logp_pos, logp_neg = head(fresh_pos), head(fresh_neg)
    assert logp_pos.shape == (25,)
    assert (logp_pos <= 0).all() and (logp_neg <= 0).all()      # log-probabilities
    assert (logp_pos > math.log(0.5)).all() and (logp_neg < math.log(0.5)).all()
    # y = log p(concept) = logsigmoid(logit)
    torch.testing.assert_close(head(feats).exp(), torch.sigmoid(head.logits(feats)))
    # frozen: no trainable parameters, differentiable wrt features (needed for importance)
    assert list(head.parameters()) == []
    f = fresh_pos.clone().requires_grad_(True)
    head(f).sum().backward()
    assert f.grad is not None and torch.isfinite(f.grad).all()


def test_fit_probe_head_held_out_split_is_stratified_and_deterministic():
    gen = torch.Generator().manual_seed(1)
    feats = torch.randn(60, 3, generator=gen)
    labels = (feats[:, 0] > 0).float()
    h1, h2 = fit_probe_head(feats, labels, seed=3), fit_probe_head(feats, labels, seed=3)
    torch.testing.assert_close(h1.weight, h2.weight)
    assert h1.heldout_accuracy == h2.heldout_accuracy
    assert 0.8 <= h1.heldout_accuracy <= 1.0
