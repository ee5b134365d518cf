"""Scoring overhead and memory of `scan` on a GPT-2-small-sized model (random weights).

Prints, measured side by side in one run:
  * scoring time / plain forward time over the same examples (same batches): without importance
    (activation pass: hooks + pooling + metric updates) and with importance (+ one forward/backward on the
    concept inputs; the probe's tasks are dropped so importance runs over every positive example - the
    harder case);
  * peak memory (process RSS on CPU, max_memory_allocated on CUDA) for 1x vs 10x the examples, each in a
    fresh subprocess.

Targets (issue 3): <= 1.3 without importance, <= 3.5 with, memory ratio <= 1.2.

    python benchmarks/bench_scan.py [--repeats 3] [--batch-size 16]
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import (base_concept, concept_texts, gpt2_small_random, local_bpe_tokenizer,  # noqa: E402
                     peak_rss_since_reset_mb, replicate, reset_peak_rss, timed)

from neurolens_lightning.adapters import adapter_for  # noqa: E402
from neurolens_lightning.scanner import ConceptScanner  # noqa: E402


def setup(times: int = 1, drop_tasks: bool = True):
    concept = base_concept("royalty")
    tok = local_bpe_tokenizer(concept_texts(concept))
    model = gpt2_small_random()
    adapter = adapter_for(model, tok, name="gpt2-small-random")
    return adapter, replicate(concept, times, drop_tasks=drop_tasks)


def plain_forward(adapter, scanner):
    with torch.no_grad():
        for _, batch in scanner.batches():
            adapter.forward(batch)


def memory_child(times: int, importance: bool) -> None:
    adapter, concept = setup(times)
    if torch.cuda.is_available():
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated() / 2**20
    else:
        base = reset_peak_rss()  # model loaded; measure the peak of the scoring itself
    scanner = ConceptScanner(adapter, concept, batch_size=16, importance=importance)
    scanner.run()
    scanner.compute()
    peak = torch.cuda.max_memory_allocated() / 2**20 if torch.cuda.is_available() else peak_rss_since_reset_mb()
    print(json.dumps({"peak_mb": peak, "base_mb": base, "n_examples": len(concept.positive) + len(concept.negative)}))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--memory-child", type=int, default=0)
    ap.add_argument("--importance", action="store_true")
    args = ap.parse_args()
    if args.memory_child:
        memory_child(args.memory_child, args.importance)
        return

    adapter, concept = setup(1)
    dev = adapter.device
    print(f"device: {dev} ({torch.cuda.get_device_name() if dev.type == 'cuda' else 'CPU, ' + str(torch.get_num_threads()) + ' threads'})")
    print(f"model: GPT-2 small shape (12 x 3072 MLP units, random weights); concept royalty "
          f"({len(concept.positive)} pos + {len(concept.negative)} neg examples), batch {args.batch_size}")
    sc_noimp = ConceptScanner(adapter, concept, batch_size=args.batch_size, importance=False)
    sc_imp = ConceptScanner(adapter, concept, batch_size=args.batch_size, importance=True)
    t_fwd = timed(lambda: plain_forward(adapter, sc_noimp), args.repeats)

    def score_noimp():
        sc_noimp.reset()
        sc_noimp.run()
        sc_noimp.compute()

    def score_imp():
        sc_imp.reset()
        sc_imp.run()
        sc_imp.compute()

    t_noimp = timed(score_noimp, args.repeats)
    t_imp = timed(score_imp, args.repeats)
    print(f"plain forward:                 {t_fwd:8.3f} s")
    print(f"scoring without importance:    {t_noimp:8.3f} s   ratio {t_noimp / t_fwd:5.2f}  (target <= 1.3)")
    print(f"scoring with importance:       {t_imp:8.3f} s   ratio {t_imp / t_fwd:5.2f}  (target <= 3.5)")

    peaks = {}
    for times in (1, 10):
        out = subprocess.run([sys.executable, __file__, "--memory-child", str(times), "--importance"],
                             capture_output=True, text=True, check=True)
        peaks[times] = json.loads(out.stdout.strip().splitlines()[-1])
    p1, p10 = peaks[1], peaks[10]
    kind = "CUDA max_memory_allocated" if torch.cuda.is_available() else "peak RSS during scoring (VmHWM reset after loading)"
    print(f"peak memory ({kind}), scoring with importance:")
    for name, p in (("1x ", p1), ("10x", p10)):
        print(f"  {name} ({p['n_examples']:5d} examples): peak {p['peak_mb']:8.1f} MiB  "
              f"(model + runtime before scoring {p['base_mb']:7.1f} MiB, working memory {p['peak_mb'] - p['base_mb']:6.1f} MiB)")
    print(f"  ratio 10x / 1x: peak {p10['peak_mb'] / p1['peak_mb']:5.3f} (target <= 1.2), working memory "
          f"{(p10['peak_mb'] - p10['base_mb']) / max(p1['peak_mb'] - p1['base_mb'], 1e-9):5.3f}")


if __name__ == "__main__":
    main()
