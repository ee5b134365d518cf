#!/usr/bin/env bash
# Every CPU figure the README quotes, re-run on the current code in one go (one after another, so each has the
# machine to itself); each script writes its output under docs/measured/. The H200 figures (bench_calibration,
# bench_ablation_cost, bench_steering_null) need a GPU: run them with benchmarks/device_check.py's machine.
set -euo pipefail
cd "$(dirname "$0")/.."
export TOKENIZERS_PARALLELISM=false HF_HUB_OFFLINE=1 WANDB_MODE=offline
echo "load average at the start: $(cut -d' ' -f1-3 /proc/loadavg)"
python3 benchmarks/readme_timings.py                       # docs/measured/readme_timings_cpu.txt
python3 benchmarks/bench_smollm2.py | tee docs/measured/bench_smollm2_cpu.txt
python3 examples/train_tiny_gpt2_concept.py --threads 1 | tee docs/measured/example_tiny_gpt2_cpu.txt
python3 examples/finetune_minilm_negation.py --threads 1 | tee docs/measured/example_minilm_negation_cpu.txt
python3 benchmarks/fault_table.py                          # docs/measured/fault_table_cpu.txt
echo "load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)"
