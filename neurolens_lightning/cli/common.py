"""What the ``neurolens`` commands share: quieting the model libraries, output-folder names and flag groups."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, Callable


def quiet_libraries() -> None:
    """No tokenizer-parallelism warnings, transformers' warnings or progress bars (commands that load models).

    Set through the environment, read when transformers is imported: nothing heavy is imported here, so the
    checks before the work stay fast; a transformers already imported is quieted directly."""
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    if "transformers" in sys.modules:
        try:
            import transformers  # already imported: no cost

            transformers.utils.logging.set_verbosity_error()
            transformers.utils.logging.disable_progress_bar()
        except Exception:  # pragma: no cover
            pass


def add_command(subparsers: Any, name: str, func: Callable[[argparse.Namespace], int], help: str,
                description: str | None = None) -> argparse.ArgumentParser:
    """The sub-parser of command ``name``, which runs ``func(args)``."""
    p = subparsers.add_parser(name, help=help, description=description)
    p.set_defaults(func=func)
    return p


def add_ablation_flags(p: argparse.ArgumentParser, top_k_help: str, ablate_help: str) -> None:
    """Flags shared by scan and compare: how many top neurons, and their causal test by ablation."""
    p.add_argument("--top-k", type=int, dest="top_k", help=top_k_help)
    p.add_argument("--ablate", action="store_true", default=None, help=ablate_help)
    p.add_argument("--ablation", choices=["interchange", "zero", "mean", "resample"],
                   help="intervention (default interchange: does the model use the neuron's concept-dependent "
                        "activity; zero/mean/resample: is the neuron necessary for y)")
    p.add_argument("--null-samples", type=int, dest="null_samples", help="random neurons per layer for the null")


def add_output_flags(p: argparse.ArgumentParser, default: str) -> None:
    """``--out`` and ``--overwrite``: the output folder, checked before any work."""
    p.add_argument("--out", help=f"output folder (default {default}); an earlier NeuroLens run there is replaced "
                                 "whole")
    p.add_argument("--overwrite", action="store_true", default=None,
                   help="allow --out to be a symbolic link or a non-empty folder that is not a NeuroLens output "
                        "(it is replaced whole)")


def print_notes(output: Any) -> None:
    """What the output check cleaned up before the work (leftovers of killed runs), one ``note:`` line each."""
    for note in getattr(output, "notes", None) or []:
        print(f"note: {note}", file=sys.stderr)


def print_published(output: Any, out: Any) -> None:
    """After the publish: say when another run took the folder meanwhile (this run went to ``out``), or when an
    earlier run was replaced."""
    if output is None:
        return
    if out != output.path:
        print(f"note: {output.path} was written by another run while this one worked; this run is in {out}",
              file=sys.stderr)
    elif output.replaces:
        print(f"note: the earlier run in {out} was replaced whole by this one", file=sys.stderr)


def add_runtime_flags(p: argparse.ArgumentParser, tokenizer_help: str) -> None:
    """Flags shared by scan and compare: tokenizer, device, download, importance, batch size."""
    p.add_argument("--tokenizer", help=tokenizer_help)
    p.add_argument("--device", help="cpu, cuda, cuda:1 or auto (default)")
    p.add_argument("--download", action="store_true", default=None, help="allow downloading hub weights")
    p.add_argument("--no-importance", action="store_false", dest="importance", default=None,
                   help="skip the gradient x activation pass")
    p.add_argument("--batch-size", type=int, dest="batch_size")
