"""Batched vs naive ablation of the top-10 candidates on a GPT-2-small-sized model (random weights).

Measured side by side in one run, on the same neurons and inputs:
  * batched: NeuroLens' AblationRunner, 8 ablations per forward (replicated batch, one mask per replica)
    and re-entry at the ablated block (activations below it computed once per chunk);
  * naive: one full forward per neuron (replicas=1, no re-entry);
  * Captum's LayerFeatureAblation on the same neurons (one LayerFeatureAblation per layer, the candidates as
    feature groups, every other unit in one extra group that Captum also ablates) - the tool users would
    otherwise reach for.
Checks that batched and naive give the same delta to 1e-5.

    python benchmarks/bench_ablation.py [--top-k 10] [--examples 64]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import base_concept, concept_texts, gpt2_small_random, local_bpe_tokenizer  # noqa: E402

from neurolens_lightning.ablation import AblationJob, AblationRunner  # noqa: E402
from neurolens_lightning.adapters import adapter_for  # noqa: E402
from neurolens_lightning.scanner import ConceptScanner  # noqa: E402


def encode(adapter, chunk, tasks: bool):
    return adapter.encode_confidence(None, chunk) if tasks else adapter.encode_confidence(chunk, None)


def run(runner: AblationRunner, adapter, items, batch_size: int, tasks: bool) -> float:
    t = time.perf_counter()
    for s in range(0, len(items), batch_size):
        runner.step("concept", encode(adapter, items[s:s + batch_size], tasks))
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--top-k", type=int, default=10)
    ap.add_argument("--examples", type=int, default=60)
    ap.add_argument("--inputs", choices=["tasks", "positives"], default="tasks",
                    help="concept inputs: the probe's tasks (what scan uses for GPT-2; y = log p(target)), repeated "
                         "to --examples, or positive sentences (y = mean log p of own predictions at every position)")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--no-captum", action="store_true")
    args = ap.parse_args()
    concept = base_concept("royalty")
    tok = local_bpe_tokenizer(concept_texts(concept))
    adapter = adapter_for(gpt2_small_random(), tok, name="gpt2-small-random")
    dev = adapter.device
    print(f"device: {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else 'CPU, ' + str(torch.get_num_threads()) + ' threads'})")
    scanner = ConceptScanner(adapter, concept, importance=False)
    scanner.run_activation_pass()
    scores = scanner.compute()
    top = scores.order[: args.top_k].tolist()
    site_pos = {s.layer: i for i, s in enumerate(scanner.sites)}
    neurons = [(int(scores.layer[i]), int(scores.index[i])) for i in top]
    jobs = [AblationJob([(site_pos[l], u)], "candidate", l) for l, u in neurons]
    tasks = args.inputs == "tasks"
    pool = list(concept.tasks) if tasks else list(concept.positive)
    items = (pool * (args.examples // len(pool) + 1))[: args.examples]
    what = "royalty tasks, y = log p(target | prompt)" if tasks else \
        "positive sentences, y = mean log p of the model's own next-token predictions"
    print(f"GPT-2 small shape, random weights; top-{args.top_k} neurons {neurons}; {len(items)} concept inputs ({what})")

    def make(replicas: int, reuse: bool) -> AblationRunner:
        return AblationRunner(adapter, scanner.sites, jobs, replicas=replicas, reuse=reuse)

    run(make(8, True), adapter, items[: args.batch_size], args.batch_size, tasks)  # warm-up
    batched = make(8, True)
    t_b = run(batched, adapter, items, args.batch_size, tasks)
    naive = make(1, False)
    t_n = run(naive, adapter, items, args.batch_size, tasks)
    d_b = batched.deltas("concept").mean(1)
    d_n = naive.deltas("concept").mean(1)
    err = float((d_b - d_n).abs().max())
    print(f"naive (1 full forward per neuron):        {t_n:8.2f} s")
    print(f"batched (8 per forward + block re-entry): {t_b:8.2f} s   speed-up {t_n / t_b:5.2f}x  (target >= 2x)")
    print(f"max |delta_batched - delta_naive| = {err:.2e}  ({'OK' if err <= 1e-5 else 'MISMATCH'} at 1e-5)")
    if args.no_captum:
        return
    try:
        from captum.attr import LayerFeatureAblation
    except ImportError:
        print("captum not installed (pip install captum): skipped")
        return
    t = time.perf_counter()
    for s in range(0, len(items), args.batch_size):
        batch = encode(adapter, items[s:s + args.batch_size], tasks).to(dev)

        def forward_func(input_ids, batch=batch):
            b = batch
            b.inputs["input_ids"] = input_ids
            return adapter.confidence(b, adapter.forward(b))

        for layer in sorted({l for l, _ in neurons}):
            units = [u for l, u in neurons if l == layer]
            site = scanner.sites[site_pos[layer]]
            mask = torch.full((site.units,), len(units), dtype=torch.long, device=dev)
            for g, u in enumerate(units):
                mask[u] = g
            lfa = LayerFeatureAblation(forward_func, site.module)
            with torch.no_grad():
                lfa.attribute(batch.inputs["input_ids"], layer_mask=mask.view(1, 1, -1), layer_baselines=0.0)
    t_c = time.perf_counter() - t
    print(f"Captum LayerFeatureAblation (same neurons): {t_c:6.2f} s   NeuroLens batched is {t_c / t_b:5.2f}x faster")


if __name__ == "__main__":
    main()
