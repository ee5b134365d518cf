"""What the valid claims cost: the ablation stage of the README's main command, this checkout vs an earlier one.

Runs ``neurolens scan --model minilm --concept royalty --ablate --top-k 10`` (the README's default job) with
this checkout's package and with another checkout's (a ``git worktree`` of an earlier commit), alternately,
in one run on the same machine, and prints each run's ablation stage (``results.json["timings_s"]``), the
median ratio, the number of jobs and null rounds where the results report them, and the load average.

    git worktree add /tmp/base e59e27e        # the main before the claims issue
    python benchmarks/bench_ablation_cost.py --base /tmp/base --reps 2

Extra arguments after ``--`` go to both commands (e.g. ``-- --ablation zero``).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(checkout: Path, extra: list[str], threads: int) -> dict:
    out = Path(tempfile.mkdtemp(prefix="nl-cost-")) / "run"
    path = os.pathsep.join([str(checkout)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])
    env = {**os.environ, "PYTHONPATH": path, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-c", "import sys, neurolens_lightning as nl; print('PKG', nl.__file__, file=sys.stderr); "
           "from neurolens_lightning.cli import main; sys.exit(main())",
           "scan", "--model", "minilm", "--concept", "royalty", "--ablate", "--top-k", "10", "--out", str(out),
           *extra]
    t0 = time.perf_counter()
    # cwd: a fresh folder, so that `python -c` (whose sys.path starts with the cwd) imports the checkout named
    # in PYTHONPATH and nothing else
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=out.parent)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{checkout}: rc {proc.returncode}\n{proc.stderr[-3000:]}")
    data = json.loads((out / "results.json").read_text())
    summ = data.get("ablation_summary") or {}
    pkg = next((ln.split(" ", 1)[1] for ln in proc.stderr.splitlines() if ln.startswith("PKG ")), "?")
    if not pkg.startswith(str(checkout)):
        raise SystemExit(f"imported {pkg}, not the checkout {checkout}")
    return {"ablation": data["timings_s"]["ablation"], "wall": wall, "package": pkg, "n_tested": summ.get("n_tested"),
            "null": sum(r.get("n", 0) for r in summ.get("null") or []), "joint_null_n": summ.get("joint_null_n"),
            "method": summ.get("method"), "n_validated": summ.get("n_validated")}


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="the other checkout (a git worktree)")
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    args, extra = ap.parse_known_args(argv)
    extra = [a for a in extra if a != "--"]
    base = Path(args.base).resolve()
    import torch

    dev = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU"
    print(f"# device: {dev} (the CLI's --device auto)")
    print(f"# ablation stage of `neurolens scan --model minilm --concept royalty --ablate --top-k 10 {' '.join(extra)}`"
          f"\n# this checkout: {ROOT}\n# base: {base}\n# load average at start {os.getloadavg()[0]:.2f}")
    rows: dict[str, list[dict]] = {"base": [], "this": []}
    for rep in range(args.reps):
        order = [("base", base), ("this", ROOT)] if rep % 2 == 0 else [("this", ROOT), ("base", base)]
        for name, path in order:
            r = run_once(path, extra, args.threads)
            rows[name].append(r)
            print(f"  rep {rep} {name:>4} ({r['package']}): ablation {r['ablation']:7.1f} s (whole command {r['wall']:6.1f} s), "
                  f"method {r['method']}, tested {r['n_tested']}, null neurons {r['null']}, joint null sets "
                  f"{r['joint_null_n']}, validated {r['n_validated']}; load {os.getloadavg()[0]:.2f}", flush=True)
    b = statistics.median(r["ablation"] for r in rows["base"])
    t = statistics.median(r["ablation"] for r in rows["this"])
    ratios = [x["ablation"] / y["ablation"] for x, y in zip(rows["this"], rows["base"])]
    print(f"\nmedian ablation stage: base {b:.1f} s, this {t:.1f} s, ratio {t / b:.2f} "
          f"(per rep: {', '.join(f'{r:.2f}' for r in ratios)}); load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
