"""The one publish (neurolens_lightning.io): a folder is always one whole run, output problems are found before the
work, and what a killed run leaves behind is repaired by the next one. Faults are injected at every step."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from neurolens_lightning import io as nio
from neurolens_lightning.io import OutputError, check_out, publish

OLD = {"results.json": "old", "report.html": "old page"}
NEW = {"results.json": "new", "extra.txt": "new"}


def writer(files):
    def write(tmp: Path) -> None:
        for name, text in files.items():
            (tmp / name).write_text(text)
    return write


def contents(folder: Path) -> dict:
    return {p.name: p.read_text() for p in folder.iterdir() if not p.name.startswith(".")}


def leftovers(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


def dead_pid() -> int:
    p = subprocess.Popen([sys.executable, "-c", "pass"])
    p.wait()
    return p.pid


def test_a_publish_replaces_the_folder_whole(tmp_path):
    out = tmp_path / "run"
    assert publish(out, writer(OLD)) == out and contents(out) == OLD
    publish(out, writer(NEW))
    assert contents(out) == NEW  # report.html of the earlier run is gone: nothing stale survives
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("umask, mode", [(0o022, 0o755), (0o077, 0o700), (0o002, 0o775)])
def test_folders_follow_the_umask(tmp_path, umask, mode):
    old = os.umask(umask)
    try:
        publish(tmp_path / "run", writer(NEW))
    finally:
        os.umask(old)
    assert (tmp_path / "run").stat().st_mode & 0o777 == mode


def _inject(monkeypatch, target, name, at):
    """Make ``target.name`` raise OSError on its ``at``-th call (counting from 1); returns the call counter."""
    real = getattr(target, name)
    calls = {"n": 0}

    def failing(*a, **k):
        calls["n"] += 1
        if calls["n"] == at:
            raise OSError(5, f"injected failure of {name}")
        return real(*a, **k)

    monkeypatch.setattr(target, name, failing)
    return calls


@pytest.mark.parametrize("exchange", [True, False], ids=["exchange", "two-renames"])
@pytest.mark.parametrize("fault", ["write", "mkdtemp", "rename-1", "rename-2", "exchange", "rmtree"])
def test_a_publish_interrupted_at_any_step_leaves_one_whole_run(tmp_path, monkeypatch, fault, exchange):
    out = tmp_path / "run"
    publish(out, writer(OLD))
    if not exchange:
        monkeypatch.setattr(nio, "_exchange", lambda a, b: False)
    write = writer(NEW)
    if fault == "write":
        def write(tmp):  # noqa: F811 - a write that dies half way
            (tmp / "results.json").write_text("new")
            raise OSError(28, "No space left on device")
    elif fault == "mkdtemp":
        _inject(monkeypatch, nio.tempfile, "mkdtemp", 1)
    elif fault.startswith("rename"):
        _inject(monkeypatch, nio.os, "rename", int(fault[-1]))
    elif fault == "exchange":
        monkeypatch.setattr(nio, "_exchange", lambda a, b: (_ for _ in ()).throw(OSError(5, "injected")))
    else:  # the clean-up after the swap does nothing: the run is published, the earlier one left hidden
        monkeypatch.setattr(nio.shutil, "rmtree", lambda *a, **k: None)
    try:
        got = publish(out, write, rescue=None)
    except OSError:
        got = None
    now = contents(out)
    assert now in (OLD, NEW), now  # never a mix
    assert (got == out) == (now == NEW)
    if fault == "rmtree":  # a failed clean-up leaves a hidden folder of this (live) process; a later run
        assert now == NEW and leftovers(tmp_path)  # removes it once this process is gone (test_leftovers_...)
    else:
        assert leftovers(tmp_path) == []


@pytest.mark.parametrize("other_thread", [False, True])
def test_a_signal_during_the_swap_is_held_until_the_run_is_whole(tmp_path, monkeypatch, other_thread):
    """Also with another thread alive (torch's and tokenizers' pools): the kernel may hand it the signal."""
    import threading

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)  # as in a terminal, also when launched
    stop = threading.Event()                                            # in the background (SIGINT ignored)
    if other_thread:
        threading.Thread(target=stop.wait, daemon=True).start()
    out = tmp_path / "run"
    publish(out, writer(OLD))
    real = nio._exchange

    def exchange_with_signal(a, b):
        os.kill(os.getpid(), signal.SIGINT)  # arrives in the middle of the swap
        return real(a, b)

    monkeypatch.setattr(nio, "_exchange", exchange_with_signal)
    with pytest.raises(KeyboardInterrupt):
        publish(out, writer(NEW))
    stop.set()
    signal.signal(signal.SIGINT, previous)
    assert contents(out) == NEW and out in nio.published()  # delivered after the swap: the new run, whole


def test_an_error_while_writing_rescues_the_finished_results(tmp_path):
    out, spare = tmp_path / "run", tmp_path / "spare"
    spare.mkdir()
    calls = {"n": 0}

    def write(tmp):
        calls["n"] += 1
        if calls["n"] == 1:
            raise OSError(28, "No space left on device")
        writer(NEW)(tmp)

    with pytest.raises(OutputError, match="No space left on device.*saved to") as e:
        publish(out, write, rescue=spare)
    rescued = [p for p in spare.iterdir()]
    assert len(rescued) == 1 and contents(rescued[0]) == NEW and str(rescued[0]) in str(e.value)
    assert not out.exists()


def test_two_writers_never_overwrite_each_other(tmp_path):
    out = tmp_path / "run"
    first, second = check_out(out), check_out(out)  # both checked before their work
    publish(first, writer(OLD))
    got = publish(second, writer(NEW))
    assert got == tmp_path / "run-2" and second.published == got
    assert contents(out) == OLD and contents(got) == NEW


@pytest.mark.parametrize("case", ["file", "dangling", "symlink", "foreign", "inside-a-file"])
def test_output_problems_are_refused_before_the_work(tmp_path, case):
    out = tmp_path / "out"
    if case == "file":
        out.write_text("x")
    elif case == "dangling":
        out.symlink_to(tmp_path / "missing")
    elif case == "symlink":
        (tmp_path / "real").mkdir()
        out.symlink_to(tmp_path / "real")
    elif case == "foreign":
        out.mkdir()
        (out / "thesis.tex").write_text("mine")
    else:
        (tmp_path / "f").write_text("x")
        out = tmp_path / "f" / "out"
    with pytest.raises(OutputError) as e:
        check_out(out)
    assert len(str(e.value).splitlines()) == 1
    if case in ("symlink", "foreign"):
        assert "--overwrite" in str(e.value)
        checked = check_out(out, overwrite=True)
        publish(checked, writer(NEW))
        assert contents(out) == NEW


def test_an_earlier_neurolens_run_may_be_replaced(tmp_path):
    out = tmp_path / "run"
    publish(out, writer(OLD))
    assert check_out(out).replaces and not check_out(tmp_path / "new").replaces


def test_free_space_is_checked(tmp_path):
    with pytest.raises(OutputError, match="MiB free"):
        check_out(tmp_path / "run", need_bytes=2**62)


def test_leftovers_of_killed_runs_are_cleaned_or_restored(tmp_path):
    pid = dead_pid()
    out = tmp_path / "run"
    (tmp_path / f".run.tmp-{pid}-abc").mkdir()  # a killed run's unfinished folder
    (tmp_path / f".run.old-{pid}-abc").mkdir()  # a killed two-rename swap: the earlier run moved aside
    (tmp_path / f".run.old-{pid}-abc" / "results.json").write_text("old")
    alive = tmp_path / f".run.tmp-{os.getpid()}-live"  # a live run's folder is left alone
    alive.mkdir()
    checked = check_out(out)
    assert contents(out) == {"results.json": "old"}
    assert len(checked.notes) == 2 and any("restored" in n for n in checked.notes)
    assert leftovers(tmp_path) == [alive.name]


def test_a_sigkill_during_the_work_leaves_nothing_the_next_run_does_not_clean(tmp_path):
    out = tmp_path / "run"
    publish(out, writer(OLD))
    code = textwrap.dedent(f"""
        import os, signal, sys
        from pathlib import Path
        from neurolens_lightning.io import publish
        def write(tmp):
            (tmp / "results.json").write_text("new")
            os.kill(os.getpid(), signal.SIGKILL)
        publish(Path({str(out)!r}), write)
    """)
    p = subprocess.run([sys.executable, "-c", code])
    assert p.returncode == -signal.SIGKILL
    assert contents(out) == OLD and len(leftovers(tmp_path)) == 1
    assert any("removed" in n for n in check_out(out).notes) and leftovers(tmp_path) == []


@pytest.fixture
def mount_point(tmp_path):
    point = tmp_path / "mnt"
    point.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", str(point)], capture_output=True)
    if r.returncode != 0:
        if os.environ.get("NEUROLENS_REQUIRE_MOUNT"):
            pytest.fail(f"cannot mount a tmpfs: {r.stderr.decode().strip()}")
        pytest.skip(f"mounting is not permitted here: {r.stderr.decode().strip()}")
    yield point
    subprocess.run(["umount", "-l", str(point)])


def test_a_mount_point_is_published_in_place(mount_point):
    assert check_out(mount_point).mount
    publish(mount_point, writer(OLD))
    publish(mount_point, writer(NEW))
    assert contents(mount_point) == NEW and leftovers(mount_point) == []


@pytest.mark.parametrize("at", [1, 2, 3, 4])
def test_a_mount_point_publish_interrupted_rolls_back(mount_point, monkeypatch, at):
    publish(mount_point, writer(OLD))
    _inject(monkeypatch, nio.os, "replace", at)
    with pytest.raises(OSError):
        publish(mount_point, writer(NEW), rescue=None)
    assert contents(mount_point) == OLD and leftovers(mount_point) == []


def test_a_mount_point_swap_killed_half_way_is_restored_by_the_next_run(mount_point):
    publish(mount_point, writer(OLD))
    code = textwrap.dedent(f"""
        import os, signal
        from pathlib import Path
        import neurolens_lightning.io as nio
        real, n = os.replace, [0]
        def replace(a, b):
            n[0] += 1
            if n[0] == 4:  # both old entries moved aside, one new entry in
                os.kill(os.getpid(), signal.SIGKILL)
            real(a, b)
        nio.os.replace = replace
        def write(tmp):
            (tmp / "results.json").write_text("new"); (tmp / "extra.txt").write_text("new")
        nio.publish(Path({str(mount_point)!r}), write)
    """)
    p = subprocess.run([sys.executable, "-c", code])
    assert p.returncode == -signal.SIGKILL
    assert contents(mount_point) not in (OLD, NEW)  # what a SIGKILL mid-swap leaves
    notes = check_out(mount_point).notes
    assert any("restored the earlier run" in n for n in notes), notes
    assert contents(mount_point) == OLD and leftovers(mount_point) == []


def test_a_read_only_output_is_refused_before_the_work(tmp_path):
    point = tmp_path / "ro"
    point.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(point)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("mounting is not permitted here")
    try:
        with pytest.raises(OutputError, match="cannot write in .*Read-only"):
            check_out(point / "run")
    finally:
        subprocess.run(["umount", "-l", str(point)])


def test_kept_entries_are_carried_into_the_new_folder(tmp_path, monkeypatch):
    """eval's Lightning logger writes <out>/logs while it runs: the publish keeps them, and rolls them back too."""
    out = tmp_path / "run"
    checked = check_out(out, keep=("logs",))  # before the run: nothing there
    (out / "logs").mkdir(parents=True)  # the logger, during the run
    (out / "logs" / "metrics.csv").write_text("step,x")
    assert publish(checked, writer(OLD), keep=("logs",)) == out  # not taken for another writer's folder
    assert contents(out / "logs") == {"metrics.csv": "step,x"} and (out / "results.json").read_text() == "old"
    monkeypatch.setattr(nio, "_exchange", lambda a, b: (_ for _ in ()).throw(OSError(5, "injected")))
    with pytest.raises(OSError):
        publish(out, writer(NEW), rescue=None, keep=("logs",))
    assert contents(out / "logs") == {"metrics.csv": "step,x"} and (out / "results.json").read_text() == "old"


class _FakeScan:
    """Stands in for a ScanResult in write_comparison: save() publishes a results.json naming its run."""

    def __init__(self, run: str) -> None:
        self.run = run

    def save(self, out, report=True):
        return publish(out, writer({"results.json": self.run}))


@pytest.mark.parametrize("fail", [False, True])
def test_compare_publishes_its_model_scans_in_the_same_swap(tmp_path, monkeypatch, fail):
    import importlib

    cmp = importlib.import_module("neurolens_lightning.compare")
    from neurolens_lightning.report import compare_page

    monkeypatch.setattr(compare_page, "render_comparison", lambda comp: f"page {comp['run']}")
    out = tmp_path / "cmp"

    def comp(run, names):
        return {"run": run, "models": [{"name": n, "scan_dir": f"models/{n}"} for n in names]}

    cmp.write_comparison(comp("old", ["a", "b"]), out, results=[_FakeScan("old"), _FakeScan("old")])
    if fail:  # the swap fails: the earlier comparison and every one of its model scans are kept, whole
        monkeypatch.setattr(nio, "_exchange", lambda a, b: (_ for _ in ()).throw(OSError(5, "injected")))
        with pytest.raises(OutputError, match="saved to") as e:  # the finished comparison is rescued elsewhere
            cmp.write_comparison(comp("new", ["c"]), check_out(out), results=[_FakeScan("new")])
        rescued = Path(str(e.value).split("saved to '")[1].split("'")[0])
        assert sorted(p.name for p in (rescued / "models").iterdir()) == ["c"]
        shutil.rmtree(rescued)
        assert sorted(p.name for p in (out / "models").iterdir()) == ["a", "b"]
        assert (out / "report.html").read_text() == "page old"
    else:  # the earlier run's models/a and models/b do not survive beside the new models/c
        cmp.write_comparison(comp("new", ["c"]), out, results=[_FakeScan("new")])
        assert sorted(p.name for p in (out / "models").iterdir()) == ["c"]
        assert (out / "models" / "c" / "results.json").read_text() == "new"
        assert json_loads(out / "comparison.json")["run"] == "new"
    assert leftovers(tmp_path) == []


def json_loads(path: Path):
    import json

    return json.loads(path.read_text())
