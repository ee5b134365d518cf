"""The README's timings, from one run on the current code: every command of the README's walk-through run once as
a user runs it (a fresh process each), timed from outside, with the stage timings the command itself records, the
load average before and after each, and the install's size on disk. Its output is
``docs/measured/readme_timings_cpu.txt`` (or ``_cuda``), which the README quotes.

    python benchmarks/readme_timings.py [--out docs/measured/readme_timings_cpu.txt] [--skip-eval]

Not a test: it takes several minutes on a 2-core CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load() -> str:
    a, b, c = os.getloadavg()
    return f"{a:.2f}"


def du(path: Path) -> int:
    total = 0
    for p in path.rglob("*"):
        try:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_size
        except OSError:
            pass
    return total


def sizes() -> list[str]:
    import site

    sp = Path(site.getsitepackages()[0])
    parts = {"torch": sp / "torch", "nvidia (CUDA libraries)": sp / "nvidia", "triton": sp / "triton"}
    out = [f"site-packages {sp}: {du(sp) / 1e9:.2f} GB in all"]
    for name, path in parts.items():
        out.append(f"  {name}: {du(path) / 1e9:.2f} GB" if path.exists() else f"  {name}: not installed")
    return out


def run(label: str, argv: list[str], out: Path | None, lines: list[str], env: dict) -> dict | None:
    before = load()
    t = time.perf_counter()
    p = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, env=env)
    wall = time.perf_counter() - t
    line = f"{label}: wall {wall:.1f} s (load {before} -> {load()}), exit {p.returncode}"
    data = None
    for name in ("results.json", "steering.json", "comparison.json"):
        if out is not None and (out / name).is_file():
            data = json.loads((out / name).read_text())
            stages = data.get("timings_s") or {}
            if stages:
                line += "; stages: " + ", ".join(f"{k.replace('_', ' ')} {v:.1f} s" for k, v in stages.items()
                                                  if isinstance(v, (int, float)))
            break
    lines.append(line)
    lines.append("  $ " + " ".join(a if " " not in a else repr(a) for a in argv[2:]))
    if p.returncode != 0:
        lines.append("  stderr: " + p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "  (no stderr)")
    print(lines[-2] if p.returncode == 0 else "\n".join(lines[-3:]), flush=True)
    return data


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=None)
    ap.add_argument("--skip-eval", action="store_true")
    args = ap.parse_args()
    import torch

    device = "cuda" if torch.cuda.is_available() else "cpu"
    out_file = Path(args.out or ROOT / "docs" / "measured" / f"readme_timings_{device}.txt")
    env = {**os.environ, "TOKENIZERS_PARALLELISM": "false", "WANDB_MODE": "offline", "HF_HUB_OFFLINE": "1"}
    nl = [sys.executable, "-m", "neurolens_lightning.cli"]
    work = Path(tempfile.mkdtemp(prefix="readme-timings-"))
    lines = [f"# benchmarks/readme_timings.py on {device} ({os.cpu_count()} CPU cores, torch {torch.__version__}), "
             f"{time.strftime('%Y-%m-%d %H:%M')}; load average at the start {load()}"]
    scan_out = work / "scan"
    run("main job (scan --ablate --top-k 10)", nl + ["scan", "--model", "minilm", "--concept", "royalty", "--ablate",
                                                      "--top-k", "10", "--out", str(scan_out)], scan_out, lines, env)
    steer_out = work / "steer"
    run("steer --from the main job", nl + ["steer", "--from", str(scan_out), "--out", str(steer_out)], steer_out,
        lines, env)
    cmp_out = work / "compare"
    run("compare minilm vs minilm:random", nl + ["compare", "--models", "minilm", "minilm:random", "--concept",
                                                  "negation", "--out", str(cmp_out)], cmp_out, lines, env)
    small = work / "scan-plain"
    run("scan without --ablate (all 6 layers)", nl + ["scan", "--model", "minilm", "--concept", "royalty", "--out",
                                                       str(small)], small, lines, env)
    if not args.skip_eval:
        ev = work / "eval"
        run("eval (configs/eval_minilm.yaml)", nl + ["eval", "--config", "configs/eval_minilm.yaml", "--out", str(ev)],
            ev, lines, env)
    lines.append(f"load average at the end {load()}")
    lines += ["", "# install size"] + sizes()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    out_file.write_text("\n".join(lines) + "\n")
    print("\n".join(lines[-5:]))
    print(f"wrote {out_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
