"""What the three emergence examples share: their common flags, the run setup, the Trainer settings
and the closing report line.

Each example builds its parser with :func:`example_parser` (``--fast``, ``--lr``, ``--batch-size``,
``--probe-every``, ``--report-dir``, ``--threads``, ``--seed``) and adds its own flags; :func:`start`
applies ``--threads`` and ``--seed`` and returns ``lightning.pytorch``; :data:`QUIET_TRAINER` holds the
Trainer settings of a quiet CPU run; :func:`print_report` reads and announces the emergence report.
Importing this module also puts the repository root on ``sys.path``, so the examples run from a
checkout without installing the package.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

#: Trainer settings of the examples: CPU, no logger, checkpoints, progress bar or model summary
QUIET_TRAINER: dict[str, Any] = {"accelerator": "cpu", "logger": False, "enable_checkpointing": False,
                                 "enable_progress_bar": False, "enable_model_summary": False}


def example_parser(doc: str, *, lr: float, batch_size: int, probe_every: int, report_dir: str,
                   fast_help: str = "tiny smoke run (< 1 min)") -> argparse.ArgumentParser:
    """The parser with the flags every example has (its description: the first line of ``doc``)."""
    p = argparse.ArgumentParser(description=doc.splitlines()[0])
    p.add_argument("--fast", action="store_true", help=fast_help)
    p.add_argument("--lr", type=float, default=lr)
    p.add_argument("--batch-size", type=int, default=batch_size)
    p.add_argument("--probe-every", type=int, default=probe_every, help="probe every N training steps")
    p.add_argument("--report-dir", default=report_dir)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    p.add_argument("--seed", type=int, default=0)
    return p


def start(args: argparse.Namespace) -> Any:
    """Apply ``--threads`` and ``--seed``; returns ``lightning.pytorch``."""
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    import lightning.pytorch as pl

    pl.seed_everything(args.seed, verbose=False)
    return pl


def print_report(report_dir: str | Path, concept: str) -> tuple[Path, dict[str, Any]]:
    """Print where the emergence report of ``concept`` is and how many probe points it has.

    Returns:
        the path of its ``results.json`` and the loaded dict.
    """
    report = Path(report_dir) / concept / "results.json"
    data = json.loads(report.read_text())
    print(f"emergence report: {report.parent} ({len(data['emergence'])} probe points)")
    return report, data
