"""The reliability fault table, re-run on the current code through the CLI as a user (or a hostile environment)
would hit it: signals during the work and inside a publish, output folders that cannot take a run, concurrent
writers, symlinks, mount points, malformed ``steer --from`` files, misleading probes. One row per fault:
fault -> exit status, the first line the user sees, and what the output folder holds afterwards.

    python benchmarks/fault_table.py [--out docs/measured/fault_table_cpu.txt]

Needs root for the tmpfs mounts and chattr rows (skipped, and said so, otherwise). Not a test: ~3 minutes on 2 CPUs.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCAN = ["scan", "--model", "minilm", "--concept", "royalty", "--layers", "2", "--top-k", "3"]
ROWS: list[str] = []


def nl(argv, env=None, patch: str = "", wait=True, **kw):
    code = (f"import sys\n{patch}\nfrom neurolens_lightning.cli import main\nsys.exit(main(sys.argv[1:]))")
    cmd = [sys.executable, "-c", code, *map(str, argv)]
    e = {**os.environ, "TOKENIZERS_PARALLELISM": "false", **(env or {})}
    # a user's shell delivers Ctrl-C: undo the SIG_IGN a background launcher (nohup, `cmd &`) may have passed down
    kw.setdefault("preexec_fn", lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    if not wait:
        return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT, env=e, **kw)
    return subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT, env=e, **kw)


def holds(folder: Path) -> str:
    if not folder.exists():
        return "absent"
    names = sorted(p.name for p in folder.iterdir())
    res = folder / "results.json"
    tag = ""
    if res.is_file():
        try:
            tag = f" (run of layers {json.loads(res.read_text())['layers']})"
        except (ValueError, KeyError):
            tag = " (unreadable results.json)"
    hidden = [n for n in os.listdir(folder.parent) if n.startswith(f".{folder.name}.")]
    return f"{', '.join(names) or 'empty'}{tag}" + (f"; leftovers {hidden}" if hidden else "")


def last_line(p) -> str:
    """Every note the command printed, then its last neurolens line (or its last line of output)."""
    lines = (p.stderr or "").splitlines()
    notes = [l[:160] for l in lines if l.startswith("note")]
    err = [l for l in lines if l.startswith("neurolens") or "Error" in l]
    last = err[-1] if err else (p.stdout or "").strip().splitlines()[-1] if (p.stdout or "").strip() else ""
    return " / ".join(notes + ([last[:200]] if last and not notes or err else []))


def row(fault: str, p, folder: Path | None, t: float | None = None) -> None:
    took = f"{t:.1f} s" if t is not None else ""
    line = f"| {fault} | {p.returncode} | {last_line(p)} | {holds(folder) if folder else ''} | {took} |"
    ROWS.append(line)
    print(line, flush=True)


def mount(point: Path, opts: str) -> bool:
    point.mkdir(parents=True, exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", opts, "tmpfs", str(point)], capture_output=True).returncode == 0


def umount(point: Path) -> None:
    subprocess.run(["umount", "-l", str(point)], capture_output=True)


def timed(argv, **kw):
    t = time.perf_counter()
    p = nl(argv, **kw)
    return p, time.perf_counter() - t


def signal_rows(work: Path) -> None:
    out = work / "sig"
    nl(SCAN + ["--layers", "3", "--out", out])  # an earlier run, layers [3]
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGKILL):
        p = nl(SCAN + ["--ablate", "--out", out], wait=False)
        time.sleep(7)
        p.send_signal(sig)
        stdout, stderr = p.communicate()
        p.stdout, p.stderr = stdout, stderr
        row(f"{signal.Signals(sig).name} during the work (re-run into a folder)", p, out)
    # inside the publish: the two-rename fallback (no atomic exchange) killed between its renames, then the next run
    patch = ("import os, signal, neurolens_lightning.io as nio\nnio._exchange = lambda a, b: False\n"
             "real = os.rename\nn = [0]\n"
             "def rename(a, b):\n    n[0] += 1\n    real(a, b)\n"
             "    if n[0] == 1: os.kill(os.getpid(), signal.SIGKILL)\n"
             "nio.os.rename = rename")
    p = nl(SCAN + ["--out", out], patch=patch)
    row("SIGKILL between the two renames of a publish (no exchange)", p, out)
    p = nl(SCAN + ["--layers", "4", "--out", out])
    row("  ... the next run into the same folder", p, out)
    patch = ("import os, signal, neurolens_lightning.io as nio\nreal = nio._exchange\n"
             "def ex(a, b):\n    os.kill(os.getpid(), signal.SIGINT)\n    return real(a, b)\nnio._exchange = ex")
    p = nl(SCAN + ["--out", out], patch=patch)
    row("SIGINT inside the exchange of a publish", p, out)
    patch = ("import os, signal, neurolens_lightning.io as nio\nreal = nio._exchange\n"
             "def ex(a, b):\n    os.kill(os.getpid(), signal.SIGTERM)\n    return real(a, b)\nnio._exchange = ex")
    p = nl(SCAN + ["--layers", "3", "--out", out, "report=false"], patch=patch)
    row("SIGTERM inside the exchange, report=false", p, out)


def output_rows(work: Path) -> None:
    (work / "afile").write_text("x")
    (work / "dangling").symlink_to(work / "missing")
    other = work / "other-run"
    nl(SCAN + ["--out", other])
    (work / "link").symlink_to(other)
    (work / "thesis").mkdir()
    (work / "thesis" / "ch1.tex").write_text("mine")
    for name, out in [("--out an existing file", work / "afile"), ("--out a dangling symlink", work / "dangling"),
                      ("--out a symlink to another run's folder", work / "link"),
                      ("--out a non-empty foreign folder", work / "thesis")]:
        p, t = timed(SCAN + ["--out", out])
        row(name, p, None, t)
    p, t = timed(SCAN + ["--out", work / "link", "--overwrite"])
    row("  ... the symlink with --overwrite", p, other, t)
    ro = work / "ro"
    if mount(ro, "ro,size=1m"):
        p, t = timed(SCAN + ["--out", ro / "run"])
        row("read-only file system", p, None, t)
        umount(ro)
    imm = work / "immutable"
    nl(SCAN + ["--out", imm])
    if subprocess.run(["chattr", "+i", str(imm)], capture_output=True).returncode == 0:
        p, t = timed(SCAN + ["--out", imm])
        row("immutable output folder (chattr +i)", p, imm, t)
        subprocess.run(["chattr", "-i", str(imm)])
    full = work / "full"
    if mount(full, "size=40m"):
        (full / "filler").write_bytes(b"\0" * 12 * 2**20)
        p, t = timed(SCAN + ["--out", full / "run"])
        row("disk nearly full (28 MiB free)", p, None, t)
        umount(full)
    patch = ("import errno, neurolens_lightning.io as nio\nreal = nio.publish\nn = [0]\n"
             "def pub(out, write, rescue=nio.tempfile.gettempdir(), keep=()):\n"
             "    def w(tmp):\n        n[0] += 1\n"
             "        if n[0] == 1: raise OSError(errno.ENOSPC, 'No space left on device')\n        write(tmp)\n"
             "    return real(out, w, rescue=rescue, keep=keep)\n"
             "nio.publish = pub\nimport neurolens_lightning.results as r\nr.publish = pub")
    p = nl(SCAN + ["--out", work / "enospc"], patch=patch)
    row("disk full while writing (ENOSPC injected after the scan)", p, work / "enospc")
    mnt = work / "mnt"
    if mount(mnt, "size=64m"):
        nl(SCAN + ["--layers", "3", "--out", mnt])
        p, t = timed(SCAN + ["--out", mnt])
        row("--out a mount point (tmpfs), re-run", p, mnt, t)
        umount(mnt)
    race = work / "race"
    ps = [nl(SCAN + ["--layers", str(l), "--out", race], wait=False) for l in (2, 3)]
    for p in ps:
        p.stdout, p.stderr = p.communicate()
        p.returncode = p.returncode
        row("two writers into one new folder", p, None)
    ROWS.append(f"|   ... afterwards | | | {race.name}: {holds(race)}; race-2: {holds(work / 'race-2')} | |")
    print(ROWS[-1])
    old = os.umask(0o002)
    try:
        nl(SCAN + ["--out", work / "umask"])
    finally:
        os.umask(old)
    ROWS.append(f"| umask 002 | 0 | folder mode {oct((work / 'umask').stat().st_mode & 0o777)} | | |")
    print(ROWS[-1])


def from_rows(work: Path) -> None:
    good = work / "sig" / "results.json"
    base = json.loads(good.read_text()) if good.is_file() else None
    if base is None:
        return
    n0 = base["neurons"][0]
    cases = {
        '"validated": "false" (a string)': lambda d: d["neurons"][0].__setitem__(
            "ablation", {**(n0.get("ablation") or {}), "validated": "false"}),
        "index 37.9 (a float)": lambda d: d["neurons"][0].__setitem__("index", 37.9),
        "a string layer": lambda d: d["neurons"][0].__setitem__("layer", "2"),
        "neurons as a dict": lambda d: d.__setitem__("neurons", {"a": 1}),
        "a neuron without index": lambda d: d["neurons"][0].pop("index"),
    }
    for name, change in cases.items():
        d = json.loads(json.dumps(base))
        change(d)
        f = work / "from.json"
        f.write_text(json.dumps(d))
        p, t = timed(["steer", "--from", f, "--which", "candidates"])
        row(f"steer --from with {name}", p, None, t)
    f.write_text("[1, 2]")
    p, t = timed(["steer", "--from", f])
    row("steer --from a top-level array", p, None, t)


def probe_rows(work: Path) -> None:
    src = json.loads((ROOT / "neurolens_lightning" / "builtin_concepts" / "royalty.json").read_text())
    x4 = json.loads(json.dumps(src))
    x4["groups"] = {g: [t for t in ts for _ in range(4)] for g, ts in x4["groups"].items()}
    x4["negative"] = [t for t in x4["negative"] for _ in range(4)]
    (work / "x4.json").write_text(json.dumps(x4))
    for name, concept in [("royalty", "royalty"), ("royalty, each example 4x", work / "x4.json")]:
        out = work / f"probe-{name[:7]}-{len(str(concept))}"
        p, t = timed(["scan", "--model", "minilm", "--concept", concept, "--layers", "2", "3", "--out", out])
        d = json.loads((out / "results.json").read_text())
        warn = [w[:90] for w in d["warnings"] if "duplicate" in w]
        ROWS.append(f"| {name} | {p.returncode} | n_significant_fdr = {d['n_significant_fdr']} | "
                    f"{warn[0] if warn else 'no duplicate warning'} | {t:.1f} s |")
        print(ROWS[-1])
    long = json.loads(json.dumps(src))
    long["negative"][0] = "the door " * 100 + "[[farmer]] spoke"
    (work / "long.json").write_text(json.dumps(long))
    p, t = timed(["scan", "--model", "minilm", "--concept", work / "long.json", "--layers", "2"])
    row("a span beyond the model's 128 tokens", p, None, t)
    try:
        from PIL import Image

        Image.new("1", (12000, 12000)).save(work / "big.png")
        img = {"name": "big", "modality": "image", "positive": ["big.png", "big.png"], "negative": ["big.png"] * 2}
        (work / "img.json").write_text(json.dumps(img))
        p, t = timed(["scan", "--model", "resnet18", "--weights", "random", "--concept", work / "img.json"])
        row("a 12000x12000 PNG in an image probe", p, None, t)
    except Exception as e:  # pragma: no cover
        ROWS.append(f"| 12000x12000 PNG | - | not run: {e} | | |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "docs" / "measured" / "fault_table_cpu.txt"))
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="faults-"))
    head = [f"# benchmarks/fault_table.py, {time.strftime('%Y-%m-%d %H:%M')}, load {os.getloadavg()[0]:.2f}",
            "| fault | exit | what the user sees (last line) | the folder afterwards | refused after |",
            "|---|---|---|---|---|"]
    print("\n".join(head))
    for part in (signal_rows, output_rows, from_rows, probe_rows):
        part(work)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text("\n".join(head + ROWS) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
