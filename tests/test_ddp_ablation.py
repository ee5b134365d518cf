"""Ablation under DDP is exact and sharded (2 CPU processes, gloo).

* ``AblationModule`` run by ``Trainer(devices=2, strategy="ddp").validate`` after a DDP ``ProbeModule``
  scoring run: every rank ends with the single-process result (Δ of every tested neuron to 1e-6, the same
  p-values, verdicts and null), each rank ran a disjoint share of the ablation jobs, and only rank 0 logs.
* :func:`neurolens_lightning.scan` inside a ``torchrun``-style launch (``RANK``/``WORLD_SIZE`` set, gloo
  process group): the same result on both ranks as in one process, for a model whose y is a fitted probe
  head (the head must be fitted on every rank's features).

The ranks are two subprocesses started here with torchrun's environment variables (Lightning then treats
them as externally launched); each writes what it computed with ``torch.save``. A hang fails the test
after a timeout instead of blocking the suite.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
TESTS = Path(__file__).resolve().parent
TIMEOUT_S = 300
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from helpers import start_ranks, wait_ranks  # noqa: E402


# ------------------------------------------------------------------------------------------ the two workloads
def _module_run(out: Path, devices: int) -> None:
    """ProbeModule scoring, then AblationModule, both as Trainer.validate (1 process or 2 under DDP)."""
    import lightning.pytorch as pl
    from lightning.pytorch.loggers import CSVLogger

    from helpers import make_word_tokenizer, planted_gpt2, planted_probe
    from neurolens_lightning.ablation import AblationRunner
    from neurolens_lightning.concepts import load_concept
    from neurolens_lightning.training.modules import AblationModule, ProbeModule

    torch.set_num_threads(1)
    tok = make_word_tokenizer("gpt2")
    rank_concept, held_out = load_concept(planted_probe("gpt2")).split(0.5, seed=0)
    probe = ProbeModule(planted_gpt2(tok), rank_concept, tokenizer=tok, top_k=3, batch_size=4)
    kwargs = dict(accelerator="cpu", devices=devices, strategy="ddp" if devices > 1 else "auto",
                  inference_mode=False, enable_progress_bar=False, enable_model_summary=False,
                  enable_checkpointing=False)
    trainer = pl.Trainer(logger=False, **kwargs)
    trainer.validate(probe, datamodule=probe.datamodule(), verbose=False)
    shares: list[tuple[str, tuple[int, ...], tuple[int, ...]]] = []
    step = AblationRunner.step

    def spy(self, kind, batch, example_index=None, key=None):  # which jobs this rank ablated
        shares.append((kind, tuple(self.mine[kind]), tuple(self.job_index[kind])))
        return step(self, kind, batch, example_index, key)

    AblationRunner.step = spy
    try:
        module = AblationModule(probe.result, probe.adapter, probe.scanner, held_out, null_samples=8, batch_size=4)
        trainer2 = pl.Trainer(logger=CSVLogger(str(out / "logs"), name="abl", version=0), **kwargs)
        trainer2.validate(module, verbose=False)
    finally:
        AblationRunner.step = step
    _dump(out, trainer2.global_rank, trainer2.world_size, probe.result, shares)
    # a model without an output head: the probe head is fitted from every rank's features (in example order)
    from helpers import tiny_bert_encoder

    btok = make_word_tokenizer("bert")
    rank_b, held_b = load_concept(planted_probe("bert")).split(0.5, seed=0)
    probe_b = ProbeModule(tiny_bert_encoder(btok), rank_b, tokenizer=btok, top_k=3, batch_size=4)
    pl.Trainer(logger=False, **kwargs).validate(probe_b, datamodule=probe_b.datamodule(), verbose=False)
    module_b = AblationModule(probe_b.result, probe_b.adapter, probe_b.scanner, held_b, null_samples=8, batch_size=4,
                              neurons=[(0, 3), (1, 5)])
    trainer3 = pl.Trainer(logger=False, **kwargs)
    trainer3.validate(module_b, verbose=False)
    _dump(out, trainer3.global_rank, trainer3.world_size, probe_b.result, [], tag="_encoder")


def _scan_run(out: Path, devices: int) -> None:
    """scan(ablate=True) on a model without an LM head (y = a probe head), inside a torchrun-style launch."""
    import torch.distributed as dist

    from helpers import make_word_tokenizer, planted_probe, tiny_bert_encoder
    from neurolens_lightning import scan

    torch.set_num_threads(1)
    if devices > 1:
        dist.init_process_group("gloo")
    try:
        tok = make_word_tokenizer("bert")
        # 16 + 16 examples: the ranking split (8 + 8) is large enough for the probe head to hold out a part, so the
        # head depends on the order of its rows: they must be gathered in example order, not rank order
        result = scan(tiny_bert_encoder(tok), planted_probe("bert"), tokenizer=tok, top_k=3, ablate=True,
                      neurons=[(0, 3), (1, 5), (1, 17)],
                      null_samples=8, batch_size=4, device="cpu")
        rank, world = (dist.get_rank(), dist.get_world_size()) if devices > 1 else (0, 1)
        _dump(out, rank, world, result, [])
    finally:
        if devices > 1:
            dist.destroy_process_group()


def _dump(out: Path, rank: int, world: int, result, shares, tag: str = "") -> None:
    records = {f"{l}:{i}": r for (l, i), r in result.ablation.items()}
    torch.save({"rank": rank, "world": world, "records": json.dumps(records, sort_keys=True),
                "summary": json.dumps(result.ablation_summary, sort_keys=True, default=str),
                "selectivity": result.scores.selectivity.clone(), "shares": shares},
               out / f"rank{rank}_of{world}{tag}.pt")


# ------------------------------------------------------------------------------------------ the launcher
def _launch(out: Path, mode: str, devices: int) -> None:
    """Start ``devices`` ranks of this file as a torchrun would (or one plain process), wait, check."""
    procs = start_ranks(Path(__file__).resolve(), ["--worker", out, mode, devices], devices, out)
    wait_ranks(procs, TIMEOUT_S, f"{mode} with {devices} processes")


def _load(out: Path, world: int, tag: str = "") -> list[dict]:
    return [torch.load(out / f"rank{r}_of{world}{tag}.pt", weights_only=False) for r in range(world)]


def _assert_same_ablation(single: dict, other: dict) -> None:
    a, b = json.loads(single["records"]), json.loads(other["records"])
    assert a.keys() == b.keys() and a
    for key in a:
        for field in ("delta", "ci_low", "ci_high", "delta_control", "specificity_ci_low", "specificity_ci_high"):
            assert b[key][field] == pytest.approx(a[key][field], abs=1e-6), (key, field)
        for field in ("p_value", "p_holm", "null_n", "null_exceedances", "validated", "verdict", "reasons"):
            assert b[key][field] == a[key][field], (key, field)
    sa, sb = json.loads(single["summary"]), json.loads(other["summary"])
    for field in ("n_tested", "n_validated", "n_suppressors_validated", "joint_size", "n_concept_inputs",
                  "n_control_inputs"):
        assert sb[field] == sa[field], field
    assert sb["joint_delta"] == pytest.approx(sa["joint_delta"], abs=1e-6)
    assert [(r["layer"], r["n"]) for r in sb["null"]] == [(r["layer"], r["n"]) for r in sa["null"]]
    for ra, rb in zip(sa["null"], sb["null"]):
        assert rb["median"] == pytest.approx(ra["median"], abs=1e-6)


@pytest.fixture(scope="module")
def module_runs(tmp_path_factory):
    one, two = tmp_path_factory.mktemp("abl1"), tmp_path_factory.mktemp("abl2")
    _launch(two, "module", 2)
    _launch(one, "module", 1)
    return _load(one, 1)[0], _load(two, 2), two, one


def test_ablation_module_ddp_equals_single_process(module_runs):
    single, ranks, _, _ = module_runs
    assert [r["world"] for r in ranks] == [2, 2]
    assert any(json.loads(single["records"])[k]["validated"] for k in json.loads(single["records"]))  # planted
    for r in ranks:
        torch.testing.assert_close(r["selectivity"], single["selectivity"], rtol=0, atol=1e-6)
        _assert_same_ablation(single, r)
    assert ranks[0]["records"] == ranks[1]["records"]  # every rank holds the same (gathered) result


def test_probe_and_ablation_modules_ddp_exact_without_output_head(module_runs):
    """MiniLM-style encoder (y = a probe head fitted on the gathered features): the same scores, head and ablation."""
    _, _, two, one = module_runs
    single = _load(one, 1, "_encoder")[0]
    for r in _load(two, 2, "_encoder"):
        torch.testing.assert_close(r["selectivity"], single["selectivity"], rtol=0, atol=1e-6)
        _assert_same_ablation(single, r)


def test_ablation_module_ddp_shards_the_jobs(module_runs):
    _, ranks, _, _ = module_runs
    # every step of the validation loop and of the null rounds: the ranks' job shares are disjoint and
    # together cover every job of the step (rank 1 did real work, and nothing ran twice)
    assert len(ranks[0]["shares"]) == len(ranks[1]["shares"]) > 0
    for (k0, mine0, all0), (k1, mine1, all1) in zip(ranks[0]["shares"], ranks[1]["shares"]):
        assert k0 == k1 and all0 == all1
        assert not set(mine0) & set(mine1) and sorted(mine0 + mine1) == sorted(all0)
    total = [sum(len(m) for _, m, _ in r["shares"]) for r in ranks]
    assert min(total) > 0 and abs(total[0] - total[1]) <= len(ranks[0]["shares"])  # an even split


def test_ablation_module_ddp_rank_zero_logs(module_runs):
    _, _, two, _ = module_runs
    metrics = list((two / "logs").rglob("metrics.csv"))
    assert len(metrics) == 1  # one logger folder, written by rank 0
    header = metrics[0].read_text().splitlines()[0]
    assert "ablation/n_validated" in header and "ablation/joint_delta" in header


def test_scan_under_distributed_launch_equals_single_process(tmp_path_factory):
    one, two = tmp_path_factory.mktemp("scan1"), tmp_path_factory.mktemp("scan2")
    _launch(two, "scan", 2)
    _launch(one, "scan", 1)
    single, ranks = _load(one, 1)[0], _load(two, 2)
    for r in ranks:
        torch.testing.assert_close(r["selectivity"], single["selectivity"], rtol=0, atol=1e-6)
        _assert_same_ablation(single, r)


if __name__ == "__main__":
    if len(sys.argv) >= 5 and sys.argv[1] == "--worker":
        {"module": _module_run, "scan": _scan_run}[sys.argv[3]](Path(sys.argv[2]), int(sys.argv[4]))
    else:
        print(__doc__)
