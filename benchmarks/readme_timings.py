"""The README's timings and CPU figures, from one run on the current code: every command of the README's walk-through
run once as a user runs it (a fresh process each), timed from outside, with the stage timings the command itself
records, the load average before and after each, the figures the README quotes from each (validated neurons,
steering effect, comparison counts, shared neurons), and the install's size on disk. Its output is
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


def figures(data: dict) -> list[str]:
    """The numbers the README quotes from one command's output file."""
    out = []
    if "ablation_summary" in data:
        summ = data["ablation_summary"]
        val = [f"{n['layer']}:{n['index']}" for n in data["neurons"]
               if isinstance(n.get("ablation"), dict) and n["ablation"].get("validated")]
        out.append(f"  validated {len(val)} of {summ['n_tested']} tested: {' '.join(val)}; joint set "
                   f"{'beyond' if summ.get('joint_beyond_null') else 'not beyond'} its null, p = "
                   f"{summ.get('joint_p_null')}; {data['n_significant_fdr']} neurons FDR-significant")
    elif "n_significant_fdr" in data:
        out.append(f"  {data['n_significant_fdr']} neurons FDR-significant; top candidates "
                   + " ".join(f"{n['layer']}:{n['index']}" for n in data["neurons"][:5]))
    cc = data.get("cross_concept")
    if isinstance(cc, dict):
        shared = cc.get("shared") or []
        out.append(f"  cross-concept: {len(shared)} shared: "
                   + "; ".join(f"{s['layer']}:{s['index']} ({', '.join(s['selective_for'])})" for s in shared))
    t = data.get("test")
    if isinstance(t, dict) and t.get("p_null") is not None:
        con = data["concept_inputs"]["mean_y"]
        steered = " ".join(f"{n['layer']}:{n['index']}" for n in data["neurons"])
        out.append(f"  steering {steered}: y "
                   + " -> ".join(f"{y:.3f}" for y in con) + f" over {data['labels']}; effect {t['effect']:.3f}, "
                   f"p_null = {t['p_null']:.3g}, beyond_null = {t['beyond_null']}")
    for m in data.get("models", []) if isinstance(data.get("models"), list) else []:
        out.append(f"  {m['name']}: {m['n_significant_positive']} positively selective, peak depth "
                   f"{m.get('peak_rel_depth')}, strongest d {m.get('max_selectivity')}")
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
    lines.append("  $ neurolens " + " ".join(a if " " not in a else repr(a) for a in argv[3:]))
    lines += figures(data) if data else []
    if p.returncode != 0:
        lines.append("  stderr: " + p.stderr.strip().splitlines()[-1] if p.stderr.strip() else "  (no stderr)")
    print("\n".join(lines[lines.index(line):]), flush=True)
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
    cross = work / "scan-cross"
    run("scan --cross-concept (no --ablate)", nl + ["scan", "--model", "minilm", "--concept", "royalty",
                                                     "--cross-concept", "--out", str(cross)], cross, lines, env)
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
