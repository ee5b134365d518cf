"""The metrics give the single-process result in a 2-process DDP run (CPU, gloo).

Two spawned ranks each update Selectivity / Consistency / Importance / MeanActivation /
TopActivations with their share of the batches; ``compute()`` (which syncs) must equal the
single-process result on all the data. One spawn runs every split scenario (interleaved,
uneven, one rank with too few examples for a local result, one rank with no data at all);
results come back through ``torch.save`` files. The spawn is guarded by a join timeout so a
hang fails the test instead of blocking the suite.
"""

from __future__ import annotations

import socket
import time
import traceback
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from neurolens_lightning.metrics import Consistency, Importance, MeanActivation, Selectivity, TopActivations

WORLD_SIZE = 2
UNITS = 7
GROUPS = 3
TOP_K = 4
TIMEOUT_S = 120.0


# ----------------------------------------------------------------------------------------------
# data and the shared update/compute routine (used by both the ranks and the reference)
# ----------------------------------------------------------------------------------------------

def _make_data(seed: int = 0) -> dict:
    gen = torch.Generator().manual_seed(seed)
    n = 120
    groups = torch.randint(-1, GROUPS, (n,), generator=gen)        # -1 = negative example
    groups[:8] = torch.tensor([-1, 0, -1, 1, -1, 2, 0, -1])          # every class in the first batches
    acts = torch.randn(n, UNITS, generator=gen, dtype=torch.float64) * 1.5
    acts[groups >= 0] += torch.linspace(-1, 2, UNITS, dtype=torch.float64)
    acts[groups == 0, 0] += 2.0
    positions_per_example = torch.randint(1, 6, (n,), generator=gen)
    return {
        "acts": acts,
        "groups": groups,
        "is_pos": groups >= 0,
        "act_grad": torch.randn(n, UNITS, generator=gen, dtype=torch.float64),
        "grad": torch.randn(n, UNITS, generator=gen, dtype=torch.float64),
        "n_pos": positions_per_example,
        "act_sum": acts * positions_per_example.unsqueeze(1).double(),   # sum over positions
        "ids": torch.randperm(10_000, generator=gen)[:n],
        "top_pos": torch.randint(0, 9, (n, UNITS), generator=gen),
    }


def _batches(n: int, sizes: list[int]) -> list[tuple[int, int]]:
    out, start, i = [], 0, 0
    while start < n:
        end = min(n, start + sizes[i % len(sizes)])
        out.append((start, end))
        start, i = end, i + 1
    return out


def _scenarios(n: int) -> dict[str, list[list[tuple[int, int]]]]:
    """Batches per rank for each scenario (rank 0's list, rank 1's list)."""
    batches = _batches(n, [8, 3, 11, 5, 16])
    return {
        # torchmetrics-style: rank r gets batches r, r + 2, r + 4, ...
        "interleaved": [batches[0::2], batches[1::2]],
        # rank 0 gets ~3x the examples of rank 1
        "uneven": [_batches(90, [13, 7, 30]), [(b[0] + 90, b[1] + 90) for b in _batches(30, [17, 13])]],
        # rank 1 gets 3 examples only: too few for a local Selectivity, fine after the sync
        "tiny_rank": [_batches(n - 3, [40]), [(n - 3, n)]],
        # rank 1 never calls update at all
        "empty_rank": [_batches(n, [25]), []],
    }


def _run_metrics(data: dict, batches: list[tuple[int, int]]) -> dict:
    sel = Selectivity(UNITS)
    cons = Consistency(UNITS, GROUPS)
    imp = Importance(UNITS)
    mean = MeanActivation(UNITS)
    top = TopActivations(UNITS, k=TOP_K)
    for a, b in batches:
        sel.update(data["acts"][a:b], data["is_pos"][a:b])
        cons.update(data["acts"][a:b], data["groups"][a:b])
        pos = data["is_pos"][a:b]
        imp.update(data["act_grad"][a:b][pos], data["grad"][a:b][pos])
        mean.update(data["act_sum"][a:b].sum(0), data["n_pos"][a:b].sum())
        top.update(data["acts"][a:b], data["ids"][a:b], data["top_pos"][a:b])
    mean_act = mean.compute()
    return {
        "selectivity": sel.compute(),
        "consistency": cons.compute(),
        "mean_activation": mean_act,
        "importance": imp.compute(baseline=mean_act),
        "top": top.compute(),
    }


# ----------------------------------------------------------------------------------------------
# the spawned ranks
# ----------------------------------------------------------------------------------------------

def _worker(rank: int, port: int, data_path: str, out_dir: str) -> None:
    out = Path(out_dir)
    try:
        torch.set_num_threads(1)
        import torch.distributed as dist

        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank,
                                world_size=WORLD_SIZE)
        data = torch.load(data_path, weights_only=True)
        results = {}
        for name, per_rank in _scenarios(len(data["acts"])).items():
            results[name] = _run_metrics(data, per_rank[rank])
            torch.save(results, out / f"rank{rank}.pt")   # saved after each scenario: partial results survive
        dist.barrier()
        dist.destroy_process_group()
        (out / f"rank{rank}.done").write_text("ok")
    except BaseException:  # pragma: no cover - reported by the parent
        (out / f"rank{rank}.err").write_text(traceback.format_exc())
        raise


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp_results(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("ddp")
    data = _make_data()
    data_path = tmp / "data.pt"
    torch.save(data, data_path)
    ctx = mp.get_context("spawn")
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, str(data_path), str(tmp)), daemon=True)
             for r in range(WORLD_SIZE)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + TIMEOUT_S
    for p in procs:
        p.join(timeout=max(0.0, deadline - time.monotonic()))
    hung = [r for r, p in enumerate(procs) if p.is_alive()]
    for p in procs:
        if p.is_alive():
            p.kill()
            p.join(5)
    errors = {r: (tmp / f"rank{r}.err").read_text() for r in range(WORLD_SIZE) if (tmp / f"rank{r}.err").exists()}
    if hung:
        pytest.fail(f"DDP ranks {hung} still running after {TIMEOUT_S:.0f} s (killed); errors: {errors}")
    if errors or any(p.exitcode != 0 for p in procs):
        pytest.fail(f"DDP ranks failed (exit codes {[p.exitcode for p in procs]}):\n" + "\n".join(errors.values()))
    ranks = [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(WORLD_SIZE)]
    reference = _run_metrics(data, _batches(len(data["acts"]), [len(data["acts"])]))
    return data, ranks, reference


SCENARIOS = list(_scenarios(120))


def _assert_close(got, ref, atol=1e-9):
    assert set(got) == set(ref)
    for key in ref:
        torch.testing.assert_close(got[key], ref[key], rtol=0, atol=atol, msg=lambda m, k=key: f"{k}: {m}")


def test_scenarios_cover_all_examples_exactly_once():
    for name, per_rank in _scenarios(120).items():
        idx = sorted(i for rank_batches in per_rank for a, b in rank_batches for i in range(a, b))
        assert idx == list(range(120)), name


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("rank", range(WORLD_SIZE))
def test_ddp_sum_metrics_equal_single_process(ddp_results, scenario, rank):
    data, ranks, ref = ddp_results
    got = ranks[rank][scenario]
    _assert_close(got["selectivity"], ref["selectivity"])
    _assert_close(got["consistency"], ref["consistency"])
    _assert_close(got["importance"], ref["importance"])
    torch.testing.assert_close(got["mean_activation"], ref["mean_activation"], rtol=0, atol=1e-9)
    # counts are the global counts, not doubled and not local
    assert got["selectivity"]["n_pos"].item() == int(data["is_pos"].sum())
    assert got["selectivity"]["n_neg"].item() == int((~data["is_pos"]).sum())
    assert got["consistency"]["group_count"].sum().item() == int(data["is_pos"].sum())


@pytest.mark.parametrize("scenario", SCENARIOS)
@pytest.mark.parametrize("rank", range(WORLD_SIZE))
def test_ddp_top_activations_equal_single_process(ddp_results, scenario, rank):
    _, ranks, ref = ddp_results
    got, want = ranks[rank][scenario]["top"], ref["top"]
    for key in ("values", "example_ids", "positions"):
        assert got[key].shape == want[key].shape == (TOP_K, UNITS), (key, tuple(got[key].shape))
        torch.testing.assert_close(got[key], want[key], rtol=0, atol=0, msg=lambda m, k=key: f"{k}: {m}")


def test_reference_is_nontrivial(ddp_results):
    """Guard against a vacuous comparison: the reference has real, finite, varied scores."""
    _, _, ref = ddp_results
    d = ref["selectivity"]["d"]
    assert torch.isfinite(d).all() and d.std() > 0.1
    assert (ref["consistency"]["consistency"] > 0).any()
    assert (ref["top"]["example_ids"] >= 0).all()
