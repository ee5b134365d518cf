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

Every user error prints one line (``neurolens: error: ...``) and exits with status 2;
nothing is written.
"""

from __future__ import annotations

import argparse
import sys
from typing import Sequence

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


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)  # --help and usage errors exit here, before any heavy import
    if args.command not in _LIGHT_COMMANDS:
        quiet_libraries()  # imports transformers (about a second): only for the commands that load models
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
    except KeyboardInterrupt:  # pragma: no cover
        print("neurolens: interrupted; nothing was written", file=sys.stderr)
        return 130
