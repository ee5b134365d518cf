"""The ``neurolens`` command.

    neurolens scan --model minilm --concept royalty --layers 3 4 5 --top-k 10 [--ablate] [--out DIR]
    neurolens scan --config configs/scan.yaml model=minilm top_k=20
    neurolens concepts
    neurolens compare --models minilm minilm:random --concept negation     (runs neurolens_lightning.compare)
    neurolens eval --config configs/eval_minilm.yaml                         (neurolens_lightning.training.eval)

One module per command (:mod:`~neurolens_lightning.cli.scan`, ``concepts``, ``compare``, ``steer``, ``eval``), each
with ``register(subparsers)`` and its ``cmd_*`` function; :mod:`~neurolens_lightning.cli.common` holds the shared
flags. torch, transformers, Lightning, plotly and wandb are imported only inside the command functions, so
``neurolens --help`` starts fast.

Every user error prints one line (``neurolens: error: ...``) and exits with status 2; the checks that need
no model run first (:mod:`neurolens_lightning.preflight`), so bad input is refused before any work. Ctrl-C,
SIGTERM and SIGHUP print one line saying what was written (exit 130).
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from typing import Any, Sequence

from neurolens_lightning.cli import compare, concepts, eval, scan, steer
from neurolens_lightning.cli.common import quiet_libraries
from neurolens_lightning.errors import NeuroLensError

__all__ = ["build_parser", "main"]

# commands that run without torch / transformers: they start fast, so transformers is not imported for them
_LIGHT_COMMANDS = frozenset({"concepts"})


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="neurolens", description="Find, validate and report concept neurons.")
    sub = parser.add_subparsers(dest="command", required=True)
    for command in (scan, concepts, compare, steer, eval):
        command.register(sub)
    return parser


def _terminate(signum: int, frame: Any) -> None:
    """SIGTERM (and SIGHUP) end a command like Ctrl-C: the same cleanup, the same one line."""
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except KeyboardInterrupt as e:  # also SIGTERM / SIGHUP (see _terminate), at any point of the command
        from neurolens_lightning.io import published  # no torch

        how = str(e) or "SIGINT"
        done = published()
        if done:
            print(f"neurolens: interrupted ({how}) after writing {', '.join(map(str, done))} (a whole run)",
                  file=sys.stderr)
        else:
            print(f"neurolens: interrupted ({how}); nothing was written (an output folder that existed still holds "
                  "its earlier run, whole)", file=sys.stderr)
        return 130


def _main(argv: Sequence[str] | None) -> int:
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, _terminate)
    parser = build_parser()
    args = parser.parse_args(argv)  # --help and usage errors exit here, before any heavy import
    if args.command not in _LIGHT_COMMANDS:
        quiet_libraries()  # environment only: transformers reads it when a command imports it
    from omegaconf.errors import OmegaConfBaseException  # lazy: keeps neurolens --help fast
    try:
        return int(args.func(args) or 0)
    except NeuroLensError as e:
        print(f"neurolens: error: {e}", file=sys.stderr)
        return 2
    except OmegaConfBaseException as e:  # type: ignore[misc]
        msg = str(e).strip().splitlines()
        print(f"neurolens: config error: {' | '.join(l.strip() for l in msg if l.strip())}", file=sys.stderr)
        return 2
