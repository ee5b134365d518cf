"""Writing results: one atomic folder publish, one JSON-safe float rule, one slug / default-folder rule.

* :func:`publish` — a whole output folder, written into a temporary sibling and moved into place,
  so an error never leaves a half-written folder behind (scan, steering and comparison folders).
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

import datetime as _dt
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable

import numpy as np

__all__ = ["publish", "json_safe", "rounded", "slug", "default_out"]


def publish(out: "str | Path", write: Callable[[Path], Any]) -> Path:
    """Fill a fresh folder with ``write(tmp_dir)`` and publish it atomically as ``out``.

    ``tmp_dir`` is created beside ``out`` (same file system). When ``out`` does not exist the
    folder is renamed into place; when it exists, each written entry replaces the entry of the
    same name in it (a written folder replaces the old folder of that name whole; other entries
    of ``out`` are kept). On any error, also in ``write``, the temporary folder is removed and
    ``out`` is left as it was (or with the entries replaced before the error).
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    try:
        write(tmp)
        if out.exists():
            for child in tmp.iterdir():
                target = out / child.name
                if child.is_dir() and target.is_dir() and not target.is_symlink():
                    shutil.rmtree(target)
                os.replace(child, target)
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            os.replace(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return out


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
