"""Pin the multiple-testing corrections and the composite rank to independent references."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy import stats

from neurolens_lightning.ranking import bh_qvalues, composite_score, holm_adjust, rank_order


# ----------------------------------------------------------------------------------------------
# numpy references (textbook formulas, written independently of the package)
# ----------------------------------------------------------------------------------------------

def _np_bh(p: np.ndarray) -> np.ndarray:
    """q_(i) = min_{j >= i} min(1, m p_(j) / j) (statsmodels 'fdr_bh')."""
    p = np.asarray(p, float)
    m = len(p)
    order = np.argsort(p)
    q_sorted = np.empty(m)
    running = 1.0
    for rank in range(m, 0, -1):                      # from the largest p down
        running = min(running, p[order[rank - 1]] * m / rank)
        q_sorted[rank - 1] = running
    q = np.empty(m)
    q[order] = np.minimum(q_sorted, 1.0)
    return q


def _np_holm(p: np.ndarray) -> np.ndarray:
    """adj_(i) = min(1, max_{j <= i} (m - j + 1) p_(j)) (statsmodels 'holm')."""
    p = np.asarray(p, float)
    m = len(p)
    order = np.argsort(p)
    adj_sorted = np.empty(m)
    running = 0.0
    for i in range(m):
        running = max(running, (m - i) * p[order[i]])
        adj_sorted[i] = min(running, 1.0)
    adj = np.empty(m)
    adj[order] = adj_sorted
    return adj


def _random_pvalues(rng, m):
    # mixture of signal (tiny p) and null (uniform), with ties and exact 0 / 1
    p = np.concatenate([rng.uniform(0, 1, m // 2), rng.uniform(0, 1e-3, m - m // 2) ** 2])
    p[:3] = [0.0, 1.0, 0.5]
    p[3:6] = 0.02                                     # ties
    return rng.permutation(p)


# ----------------------------------------------------------------------------------------------
# Benjamini-Hochberg
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m", [1, 2, 7, 100, 2001])
def test_bh_qvalues_matches_reference(m):
    rng = np.random.default_rng(m)
    p = _random_pvalues(rng, m) if m >= 6 else rng.uniform(0, 0.1, m)
    q = bh_qvalues(torch.from_numpy(p)).numpy()
    np.testing.assert_allclose(q, _np_bh(p), rtol=1e-12, atol=1e-300)
    if hasattr(stats, "false_discovery_control"):
        np.testing.assert_allclose(q, stats.false_discovery_control(p, method="bh"), rtol=1e-12, atol=1e-300)


def test_bh_qvalues_hand_computed_and_properties():
    # p sorted: 0.01, 0.03, 0.04, 0.5 (m = 4) -> p*m/rank = 0.04, 0.06, 0.0533, 0.5
    # running min from the top: 0.5, 0.0533, 0.0533, 0.04
    q = bh_qvalues(torch.tensor([0.01, 0.04, 0.03, 0.5], dtype=torch.float64))
    assert q.tolist() == pytest.approx([0.04, 0.16 / 3, 0.16 / 3, 0.5], abs=1e-15)
    assert q.dtype == torch.float64
    rng = np.random.default_rng(0)
    p = torch.from_numpy(rng.uniform(size=500))
    q = bh_qvalues(p)
    assert (q >= p).all() and (q <= 1).all()
    # monotone: a smaller p never has a larger q
    o = torch.argsort(p)
    assert (torch.diff(q[o]) >= 0).all()
    assert bh_qvalues(torch.tensor([])).numel() == 0
    # shape [L, U] is flattened
    assert bh_qvalues(torch.rand(3, 4)).shape == (12,)


# ----------------------------------------------------------------------------------------------
# Holm
# ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("m", [1, 3, 10, 257])
def test_holm_adjust_matches_reference(m):
    rng = np.random.default_rng(100 + m)
    p = _random_pvalues(rng, m) if m >= 6 else rng.uniform(0, 0.2, m)
    np.testing.assert_allclose(holm_adjust(torch.from_numpy(p)).numpy(), _np_holm(p), rtol=1e-12, atol=1e-300)


def test_holm_hand_computed():
    # sorted 0.01, 0.02, 0.04 (m = 3): 3*0.01 = 0.03, 2*0.02 = 0.04, 1*0.04 = 0.04 -> running max 0.03, 0.04, 0.04
    assert holm_adjust(torch.tensor([0.04, 0.01, 0.02], dtype=torch.float64)).tolist() == pytest.approx([0.04, 0.03, 0.04], abs=1e-15)
    # capped at 1 and monotone after the cap: 3*0.5 -> 1, 2*0.6 -> 1, 0.7 -> max(1, 0.7) = 1
    assert holm_adjust(torch.tensor([0.5, 0.6, 0.7])).tolist() == [1.0, 1.0, 1.0]
    assert holm_adjust(torch.tensor([])).numel() == 0


# ----------------------------------------------------------------------------------------------
# composite score
# ----------------------------------------------------------------------------------------------

D_GRID = torch.linspace(-2, 6, 17, dtype=torch.float64)
C_GRID = torch.linspace(0, 1, 11, dtype=torch.float64)
I_GRID = torch.linspace(0, 2, 9, dtype=torch.float64)


def _grid_scores():
    d, c, i = torch.meshgrid(D_GRID, C_GRID, I_GRID, indexing="ij")
    s = composite_score(d.flatten(), c.flatten(), i.flatten()).reshape(d.shape)
    return d, c, i, s


def test_composite_score_range_and_zero_for_nonpositive_d():
    d, c, i, s = _grid_scores()
    assert ((s >= 0) & (s <= 1)).all()
    assert (s[d <= 0] == 0).all()
    assert (s[c == 0] == 0).all()
    assert (s[i == 0] == 0).all()
    # strictly positive wherever all three are positive
    assert (s[(d > 0) & (c > 0) & (i > 0)] > 0).all()
    # hand value: d = 1 -> 1/(1+1) = 0.5, c = 1, I = max I+ -> 1: (0.5 * 1 * 1) ** (1/3); importance is scaled
    # within its own sign, so the only negative one (-1 = max of -I) is 1 too, and -0.5 is 0.5
    got = composite_score(torch.tensor([1.0, 3.0, 3.0]), torch.tensor([1.0, 0.5, 0.5]), torch.tensor([2.0, -1.0, -0.5]))
    assert got.tolist() == pytest.approx([0.5 ** (1 / 3), (0.75 * 0.5 * 1.0) ** (1 / 3), (0.75 * 0.5 * 0.5) ** (1 / 3)],
                                         rel=1e-12)
    # without importance: geometric mean of two -> sqrt(0.75 * 0.5)
    assert composite_score(torch.tensor([3.0]), torch.tensor([0.5])).item() == pytest.approx((0.375) ** 0.5)


def test_composite_score_monotone_in_each_input():
    _, _, _, s = _grid_scores()
    # non-decreasing along every axis of the grid ...
    for axis in range(3):
        assert (torch.diff(s, dim=axis) >= -1e-15).all(), axis
    # ... and strictly increasing where the other two parts are positive
    pos = s[(D_GRID > 0)][:, 1:, 1:]
    assert (torch.diff(pos, dim=0) > 0).all()          # in d
    assert (torch.diff(s[D_GRID > 0][:, :, 1:], dim=1) > 0).all()   # in consistency
    assert (torch.diff(s[D_GRID > 0][:, 1:, :], dim=2) > 0).all()   # in importance


def test_composite_score_importance_is_magnitude_and_relative():
    d = torch.tensor([2.0, 2.0, 2.0])
    c = torch.tensor([0.8, 0.8, 0.8])
    s = composite_score(d, c, torch.tensor([-1.0, 1.0, 0.5]))
    assert s[0].item() == pytest.approx(s[1].item())     # the sign is reported beside, not scored
    assert s[1] > s[2]
    # scaling all importances by a constant leaves the score unchanged (normalized by the max)
    torch.testing.assert_close(composite_score(d, c, torch.tensor([-7.0, 7.0, 3.5])), s)
    # all-zero importance -> 0, not NaN
    assert composite_score(d, c, torch.zeros(3)).tolist() == [0.0, 0.0, 0.0]
    # consistency outside [0, 1] is clipped
    assert composite_score(torch.tensor([2.0]), torch.tensor([1.7])).item() == pytest.approx((2 / 3) ** 0.5)


# ----------------------------------------------------------------------------------------------
# rank order
# ----------------------------------------------------------------------------------------------

def test_rank_order_sorts_by_score():
    rng = np.random.default_rng(3)
    score = torch.from_numpy(rng.uniform(size=300))
    d = torch.from_numpy(rng.normal(size=300))
    order = rank_order(score, d)
    assert sorted(order.tolist()) == list(range(300))
    assert (torch.diff(score[order]) <= 0).all()
    assert order.tolist() == np.argsort(-score.numpy(), kind="stable").tolist()


def test_rank_order_ties_broken_by_selectivity():
    score = torch.tensor([0.5, 0.0, 0.5, 0.9, 0.0, 0.5])
    d = torch.tensor([1.0, -2.0, 3.0, 0.1, 5.0, 2.0])
    # 0.9 first; then the three 0.5 by d: 3.0 (idx 2), 2.0 (idx 5), 1.0 (idx 0); then the 0.0 by d: 5.0, -2.0
    assert rank_order(score, d).tolist() == [3, 2, 5, 0, 4, 1]


def test_rank_order_nearly_tied_scores_still_sorted_by_score():
    score = torch.tensor([0.5, 0.5 + 1e-10], dtype=torch.float64)
    d = torch.tensor([5.0, 0.1], dtype=torch.float64)
    assert rank_order(score, d).tolist() == [1, 0]


def test_rank_order_puts_eligible_neurons_first():
    """A consistent but non-significant neuron must not outrank an FDR-significant one."""
    score = torch.tensor([0.9, 0.5, 0.7, 0.1])
    d = torch.tensor([1.0, 2.0, 1.5, 0.5])
    eligible = torch.tensor([False, True, True, False])
    assert rank_order(score, d, eligible).tolist() == [2, 1, 0, 3]
    assert rank_order(score, d).tolist() == [0, 2, 1, 3]
