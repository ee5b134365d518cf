"""``neurolens concepts``: the built-in concepts, one line each (no torch: the command starts fast)."""

from __future__ import annotations

import argparse
from typing import Any

from neurolens_lightning.cli.common import add_command
from neurolens_lightning.concepts import builtin_concept_names, load_concept


def register(subparsers: Any) -> None:
    add_command(subparsers, "concepts", cmd_concepts, help="list the built-in concepts")


def cmd_concepts(args: argparse.Namespace) -> int:
    print(f"{'name':<12} {'modality':<8} {'groups':>6} {'positive':>8} {'negative':>8} {'tasks':>5}  description")
    for name in builtin_concept_names():
        c = load_concept(name)
        print(f"{name:<12} {c.modality:<8} {len(c.group_names):>6} {len(c.positive):>8} {len(c.negative):>8} "
              f"{len(c.tasks):>5}  {c.description}")
    return 0
