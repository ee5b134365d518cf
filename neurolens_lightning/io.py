"""Writing results: one atomic folder publish, one JSON-safe float rule, one slug / default-folder rule.

* :func:`check_out` — the output folder checked before any work (not a file, not a dangling link, writable,
  free space, not a foreign folder unless ``overwrite``; leftovers of killed runs cleaned or restored).
* :func:`publish` — a whole output folder, written into a temporary sibling and swapped into place
  atomically, so an error or a signal never leaves a half-written or mixed folder (scan, steering and
  comparison folders).
* :func:`json_safe` — non-finite floats become ``None`` (JSON has no NaN or infinity), numpy and
  torch scalars become Python numbers, recursively; :func:`rounded` adds the significant-digit
  rounding of the saved numbers.
* :func:`slug` and :func:`default_out` — file-system-safe names and ``reports/<kind>-...-<time>``.

This module imports no torch (``import neurolens_lightning`` and ``neurolens --help`` stay light).

Example:
    >>> json_safe({"p": float("nan"), "xs": (1.5, float("inf"))})
    {'p': None, 'xs': [1.5, None]}
    >>> slug("minilm:random / v2")
    'minilm_random_v2'
"""

from __future__ import annotations

import ctypes
import datetime as _dt
import errno
import functools
import math
import os
import re
import shutil
import signal
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from neurolens_lightning.errors import NeuroLensError

__all__ = ["publish", "check_out", "Output", "OutputError", "published", "json_safe", "nonfinite_paths",
           "nonfinite_warning", "rounded", "slug", "default_out"]


#: the files that mark a folder as a NeuroLens output (a re-run may replace it; any other non-empty folder is
#: "foreign" and is replaced only with ``overwrite``)
OUTPUT_MARKERS = ("results.json", "steering.json", "comparison.json", "emergence.json")
#: free space a published folder needs at least (a report page with plotly inlined is ~5 MB)
MIN_FREE_BYTES = 32 * 2**20
_HIDDEN = re.compile(r"^\.(?P<name>.+)\.(?P<kind>tmp|old)-(?P<pid>\d+)-[^/]*$")
_IN_MOUNT = ".neurolens"  # temporary entries inside a mount point: .neurolens.tmp-PID-*, .neurolens.old-PID-*
_published: list[Path] = []


class OutputError(NeuroLensError):
    """The output folder cannot take a run (a file, a dangling link, not writable, full, foreign, or in use)."""


@dataclass
class Output:
    """An output folder checked by :func:`check_out` before the work: where to publish, what it held then.

    ``token`` is what the folder held at check time (None: absent); :func:`publish` compares it again just
    before the swap, so a folder another run wrote meanwhile is never replaced silently. ``notes`` says what the
    check cleaned up or restored (leftovers of interrupted runs).
    """

    path: Path
    token: Any = None
    overwrite: bool = False
    mount: bool = False
    replaces: bool = False
    notes: list[str] = field(default_factory=list)
    published: Path | None = None  # where :func:`publish` put the run (``path``, or ``path-2`` after a race)
    keep: "tuple[str, ...]" = ()  # entries carried over, not judged (see :func:`check_out`)


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - another user's live process
        return True
    return True


def _token(path: Path, keep: "tuple[str, ...]" = ()) -> Any:
    """What ``path`` holds: None when absent or empty, else its visible entries (but ``keep``) with their
    inodes."""
    try:
        os.stat(path)
        entries = sorted((e.name, e.inode()) for e in os.scandir(path)
                         if not e.name.startswith(".") and e.name not in keep)
    except FileNotFoundError:
        return None
    except NotADirectoryError:
        return ("file",)
    return tuple(entries) or None  # an empty folder holds no run: as good as absent


def _recover(out: Path) -> list[str]:
    """Clean up after publishes of dead processes into ``out``: temporary folders are removed; an earlier run
    moved aside by a swap that did not finish is restored (it is the last whole run). Returns what was done."""
    notes: list[str] = []
    parent = out.parent
    places = [(parent, out.name)] + ([(out, _IN_MOUNT[1:])] if out.is_dir() and not out.is_symlink() else [])
    for folder, name in places:
        try:
            entries = list(os.scandir(folder))
        except OSError:
            continue
        for e in entries:
            m = _HIDDEN.match(e.name)
            if not m or m["name"] != name or _alive(int(m["pid"])):
                continue
            where = Path(e.path)
            try:  # another process (a DDP rank, a second run) may be repairing the same leftovers right now
                if folder == out:  # inside a mount point: undo a swap of entries a dead run left half done
                    notes += _recover_in_mount(out, where, m["kind"])
                elif m["kind"] == "old" and not os.path.lexists(out):
                    os.rename(where, out)  # the swap moved the earlier run aside and died before the new one came in
                    notes.append(f"restored the earlier run in {out} (a run publishing there was killed mid-swap)")
                else:
                    shutil.rmtree(where)
                    notes.append(f"removed {where.name}, a temporary folder of a killed run")
            except FileNotFoundError:
                continue
            except OSError as err:
                notes.append(f"could not clean up {where.name}, left by a killed run ({err.strerror or err})")
    return notes


def _recover_in_mount(out: Path, where: Path, kind: str) -> list[str]:
    journal = where / ".moved"
    if kind == "old" and journal.exists():
        moved_in = [n for n in journal.read_text(encoding="utf-8").splitlines() if n]
        for n in moved_in:  # the new run's entries that had reached the folder
            target = out / n
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target, ignore_errors=True)
            elif os.path.lexists(target):
                os.unlink(target)
        for e in os.scandir(where):
            if e.name != ".moved":
                os.replace(e.path, out / e.name)
        shutil.rmtree(where, ignore_errors=True)
        return [f"restored the earlier run in {out} (a run publishing there was killed mid-swap)"]
    shutil.rmtree(where, ignore_errors=True)
    return [f"removed {where.name}, a temporary folder of a killed run"]


def _probe_writable(folder: Path) -> None:
    """Raise OutputError unless a file can be created (and removed) in ``folder``."""
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as e:
        raise OutputError(f"cannot write in {str(folder)!r} ({e.strerror or e}); choose another --out or fix its "
                          "permissions") from None


def check_out(out: "str | Path | Output", overwrite: bool = False, need_bytes: int = MIN_FREE_BYTES,
              keep: "tuple[str, ...]" = ()) -> Output:
    """Check the output folder ``out`` before any work; raise :class:`OutputError` (one line) if it cannot take
    a run. Leftovers of killed runs are cleaned (or the earlier run they moved aside restored) first.

    Refused: an existing file, a dangling symbolic link, a folder that cannot be written (read-only, immutable),
    less than ``need_bytes`` free, and — unless ``overwrite`` — a symbolic link or a non-empty folder that is
    not a NeuroLens output. An earlier NeuroLens run in ``out`` is replaced whole by :func:`publish`. Entries
    named in ``keep`` (e.g. the ``logs`` a Lightning logger writes there during the run) are not judged.

    Example:
        >>> import tempfile; d = Path(tempfile.mkdtemp())
        >>> check_out(d / "run").replaces, check_out(d).replaces
        (False, False)
    """
    if isinstance(out, Output):
        return out
    path = Path(out)
    if path.is_symlink():
        if not path.exists():
            raise OutputError(f"output {str(path)!r} is a symbolic link to {os.readlink(path)!r}, which does not "
                              "exist; remove the link or choose another --out")
        if not overwrite:
            raise OutputError(f"output {str(path)!r} is a symbolic link to {str(path.resolve())!r}; a run replaces "
                              "a folder whole, so pass --overwrite to write there, or choose another --out")
        path = path.resolve()
    if path.exists() and not path.is_dir():
        raise OutputError(f"output {str(path)!r} exists and is not a folder; choose a folder name for --out")
    notes = _recover(path)
    mount = path.is_dir() and os.path.ismount(path)
    replaces = False
    if path.is_dir():
        visible = [e for e in os.listdir(path) if not e.startswith(".") and e not in keep]
        replaces = bool(visible)
        if visible and not any(m in visible for m in OUTPUT_MARKERS) and not overwrite:
            raise OutputError(f"output {str(path)!r} is a non-empty folder that is not a NeuroLens output "
                              f"({len(visible)} entries, e.g. {sorted(visible)[0]!r}); a run replaces its folder "
                              "whole, so pass --overwrite to replace it, or choose another --out")
    base = path if mount else path.parent
    while not base.exists():  # the folders --out still needs are made at publish
        base = base.parent
    if not base.is_dir():
        raise OutputError(f"output {str(path)!r}: {str(base)!r} is a file, not a folder; choose another --out")
    _probe_writable(base)
    if path.is_dir() and not mount:
        _probe_writable(path)  # an immutable folder cannot be moved aside either
    free = shutil.disk_usage(base).free
    if free < need_bytes:
        raise OutputError(f"output {str(path)!r}: only {free / 2**20:.0f} MiB free on its disk, a run needs about "
                          f"{need_bytes / 2**20:.0f} MiB; free space or choose another --out")
    return Output(path, _token(path, keep), overwrite, mount, replaces, notes, keep=tuple(keep))


def published() -> list[Path]:
    """The folders this process has published (the CLI reports them when interrupted after a publish)."""
    return list(_published)


_SIGNALS = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)


class _signals_held:
    """Hold SIGINT / SIGTERM / SIGHUP during a swap and deliver them right after it (to the handlers that were
    installed), so a signal never leaves a folder mixed; only SIGKILL can, and :func:`check_out` repairs that on the
    next run. Python runs signal handlers in the main thread whichever thread the signal reached, so deferring the
    handlers (not a thread's signal mask) holds them for the whole process."""

    def __enter__(self) -> None:
        self.old: dict[int, Any] = {}
        self.pending: list[int] = []
        if threading.current_thread() is not threading.main_thread():
            return
        for sig in _SIGNALS:
            handler = signal.getsignal(sig)
            if handler in (signal.SIG_IGN, None):
                continue
            self.old[sig] = handler
            signal.signal(sig, lambda signum, frame: self.pending.append(signum))

    def __exit__(self, *exc: Any) -> None:
        for sig, handler in self.old.items():
            signal.signal(sig, handler)
        for sig in dict.fromkeys(self.pending):
            handler = self.old[sig]
            if callable(handler):
                handler(sig, None)  # Ctrl-C's KeyboardInterrupt, or the CLI's SIGTERM handler
            else:
                signal.raise_signal(sig)  # the default action


def _exchange(a: Path, b: Path) -> bool:
    """Atomically exchange two paths (Linux ``renameat2(RENAME_EXCHANGE)``); False where not supported."""
    fn = getattr(_libc(), "renameat2", None) if sys.platform.startswith("linux") else None
    if fn is None:
        return False
    if fn(-100, os.fsencode(a), -100, os.fsencode(b), 2) == 0:  # AT_FDCWD, RENAME_EXCHANGE
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EXDEV, errno.EPERM):
        return False
    raise OSError(err, os.strerror(err), str(b))


@functools.lru_cache(maxsize=1)
def _libc() -> Any:
    try:
        return ctypes.CDLL(None, use_errno=True)
    except OSError:  # pragma: no cover
        return None


def _swap_in_mount(tmp: Path, out: Path) -> None:
    """Replace the entries of mount point ``out`` by those of ``tmp`` (inside it), with a journal so that a run
    killed half way is rolled back to the earlier run by the next :func:`check_out`."""
    old = Path(tempfile.mkdtemp(prefix=f"{_IN_MOUNT}.old-{os.getpid()}-", dir=out))
    journal, moved_in, moved_out = old / ".moved", [], []
    journal.write_text("", encoding="utf-8")
    try:
        for e in sorted(os.listdir(out)):
            if not e.startswith(f"{_IN_MOUNT}."):
                os.replace(out / e, old / e)
                moved_out.append(e)
        for e in sorted(os.listdir(tmp)):
            with open(journal, "a", encoding="utf-8") as f:
                f.write(e + "\n")
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp / e, out / e)
            moved_in.append(e)
    except BaseException:
        for e in moved_in:
            os.replace(out / e, tmp / e)
        for e in moved_out:
            os.replace(old / e, out / e)
        shutil.rmtree(old, ignore_errors=True)
        raise
    journal.unlink()
    shutil.rmtree(old, ignore_errors=True)


def _free_name(path: Path) -> Path:
    k = 2
    while os.path.lexists(path.with_name(f"{path.name}-{k}")):
        k += 1
    return path.with_name(f"{path.name}-{k}")


def publish(out: "str | Path | Output", write: Callable[[Path], Any],
            rescue: "str | Path | None" = tempfile.gettempdir(), keep: "tuple[str, ...]" = ()) -> Path:
    """Fill a fresh folder with ``write(tmp_dir)`` and publish it as ``out`` atomically, whole: afterwards ``out``
    holds this run and nothing of an earlier one; interrupted at any point it holds one whole run (old or new).

    ``out`` is checked first (:func:`check_out`; pass its :class:`Output` to check before the work). The new
    folder is built beside ``out`` (inside it when ``out`` is a mount point), then swapped in with an atomic
    exchange of the two folders (two renames with a rollback where the file system has no exchange) while
    SIGINT / SIGTERM are held. When another run wrote ``out`` after the check, this run goes to ``out-2`` (the
    returned path) instead of replacing it. Folders get the mode the umask gives. When writing or swapping
    fails with an OS error (disk full, permissions changed during the work), the folder is published in
    ``rescue`` instead (unless None) and :class:`OutputError` names where. Entries of ``out`` named in ``keep``
    (and not written by ``write``) are carried into the new folder (eval's ``logs``, written while it ran).
    """
    output = check_out(out, keep=keep)
    keep = output.keep
    path = output.path
    base = path if output.mount else path.parent
    prefix = f"{_IN_MOUNT}.tmp-" if output.mount else f".{path.name}.tmp-"
    umask = os.umask(0)
    os.umask(umask)
    tmp = Path(os.devnull)  # nothing to remove until the folder exists
    try:
        base.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=f"{prefix}{os.getpid()}-", dir=base))
        os.chmod(tmp, 0o777 & ~umask)
        write(tmp)
        with _locked(base), _signals_held():
            target = path
            # another run wrote it after our check: never replace it silently
            if _token(path, output.keep) != output.token:
                target = _free_name(path)
                if output.mount:
                    target.parent.mkdir(parents=True, exist_ok=True)
            carried = [k for k in keep if target == path and os.path.lexists(path / k)
                       and not os.path.lexists(tmp / k)]
            for k in carried:
                os.rename(path / k, tmp / k)
            try:
                _swap(tmp, target, path, base, output.mount)
            except BaseException:
                for k in carried:  # the swap was rolled back: what was carried goes back where it was
                    if os.path.lexists(tmp / k) and not os.path.lexists(path / k):
                        os.rename(tmp / k, path / k)
                raise
            _published.append(target)
            output.published = target
    except OSError as e:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        if rescue is None:
            raise
        # the work is done: an output problem found only now (disk full, permissions changed) must not lose it
        spare = Path(rescue) / f"neurolens-rescued-{path.name}-{_dt.datetime.now():%Y%m%d-%H%M%S}-{os.getpid()}"
        try:
            publish(spare, write, rescue=None)
        except OSError as e2:
            raise OutputError(f"could not write {str(path)!r} ({e.strerror or e}) nor a copy in {str(spare)!r} "
                              f"({e2.strerror or e2}); the results are lost") from None
        raise OutputError(f"could not write {str(path)!r} ({e.strerror or e}); the finished results were saved "
                          f"to {str(spare)!r} instead") from None
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _swap(tmp: Path, target: Path, path: Path, base: Path, mount: bool) -> None:
    """Put the finished folder ``tmp`` in place as ``target`` (signals held, lock taken by the caller)."""
    if mount and target == path:
        _swap_in_mount(tmp, path)
        shutil.rmtree(tmp, ignore_errors=True)
    elif not os.path.lexists(target):
        os.rename(tmp, target)
    elif _exchange(tmp, target):
        shutil.rmtree(tmp, ignore_errors=True)  # tmp now holds the earlier run
    else:
        aside = base / f".{path.name}.old-{os.getpid()}-{time.time_ns()}"
        os.rename(target, aside)
        try:
            os.rename(tmp, target)
        except BaseException:
            os.rename(aside, target)
            raise
        shutil.rmtree(aside, ignore_errors=True)


class _locked:
    """An exclusive ``flock`` on folder ``base`` while a publish swaps into it (two writers take turns)."""

    def __init__(self, base: Path) -> None:
        self.base = base

    def __enter__(self) -> None:
        self.fd = os.open(self.base, os.O_RDONLY)
        try:
            import fcntl  # POSIX only

            fcntl.flock(self.fd, fcntl.LOCK_EX)
        except (ImportError, OSError):  # pragma: no cover - no flock here: the token check still runs
            pass

    def __exit__(self, *exc: Any) -> None:
        os.close(self.fd)  # closing releases the lock


def json_safe(x: Any) -> Any:
    """``x`` with every non-finite float as ``None``, numpy / torch scalars as Python numbers and tuples as
    lists, recursively through dicts, lists and tuples (keys and their order kept).

    Example:
        >>> json_safe([np.float32(0.5), np.int64(3), -float("inf")])
        [0.5, 3, None]
    """
    if isinstance(x, dict):
        return {k: json_safe(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [json_safe(v) for v in x]
    if isinstance(x, np.generic) or (getattr(x, "ndim", None) == 0 and callable(getattr(x, "item", None))):
        x = x.item()  # a numpy scalar, or a 0-d numpy array / torch tensor
    if isinstance(x, float) and not math.isfinite(x):
        return None
    return x


def nonfinite_paths(x: Any, path: str = "") -> list[str]:
    """The paths (``a.b[2].c``) of every non-finite float in ``x`` — what :func:`json_safe` saves as null.

    Example:
        >>> nonfinite_paths({"head": {"acc": float("nan")}, "xs": [1.0, float("inf")]})
        ['head.acc', 'xs[1]']
    """
    if isinstance(x, dict):
        return [p for k, v in x.items() for p in nonfinite_paths(v, f"{path}.{k}" if path else str(k))]
    if isinstance(x, (list, tuple)):
        return [p for i, v in enumerate(x) for p in nonfinite_paths(v, f"{path}[{i}]")]
    if isinstance(x, np.generic) or (getattr(x, "ndim", None) == 0 and callable(getattr(x, "item", None))):
        x = x.item()
    return [path] if isinstance(x, float) and not math.isfinite(x) else []


def nonfinite_warning(paths: list[str], what: str = "results.json") -> str | None:
    """One warning naming the values of ``what`` that could not be computed (non-finite, saved as null)."""
    if not paths:
        return None
    shown = ", ".join(paths[:8]) + (f" and {len(paths) - 8} more" if len(paths) > 8 else "")
    return (f"{len(paths)} value(s) could not be computed (not finite) and are saved as null in {what}: {shown}")


def rounded(x: Any, nd: int = 6) -> float | None:
    """``x`` as a float rounded to ``nd`` significant digits, JSON-safe (None for None, NaN and ±inf).

    Example:
        >>> rounded(1 / 3), rounded(2 / 3, 4), rounded(float("inf")), rounded(None)
        (0.333333, 0.6667, None, None)
    """
    if x is None:
        return None
    return json_safe(float(f"{float(x):.{nd}g}"))


def slug(text: Any, empty: str = "model") -> str:
    """``text`` as a file-system-safe name: runs of other characters than ``A-Za-z0-9_.-`` become ``_``,
    leading/trailing ``_`` and ``.`` are dropped; ``empty`` when nothing is left.

    Example:
        >>> slug("minilm:random"), slug("a/b c"), slug("..")
        ('minilm_random', 'a_b_c', 'model')
    """
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", str(text)).strip("_.") or empty


def default_out(kind: str, *parts: Any, root: "str | Path" = "reports") -> Path:
    """The one default output folder: ``<root>/[<kind>-]<part>-...-<YYYYmmdd-HHMMSS>`` (local time); each part is
    a model or concept name or path, named by its last path component (``probes/x.json`` -> ``x``), slugged.

    Example:
        >>> default_out("steer", "minilm", "probes/royalty.json").name[:21]     # doctest: +SKIP
        'steer-minilm-royalty-'
    """
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    names = [slug(Path(str(p)).stem if str(p).endswith(".json") else (Path(str(p)).name or str(p))) for p in parts]
    return Path(root) / "-".join([*([kind] if kind else []), *names, stamp])
