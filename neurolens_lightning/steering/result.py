"""What a steering measured (:class:`SteeringResult`: steering.json + steering.html), and the scan it starts from.

Example:
    >>> scan_split({"settings": {"seed": 3, "holdout": 0.25, "ablate": True}})["holdout"]
    0.25
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.io import json_safe, publish
from neurolens_lightning.report.steering_page import write_steering_report
from neurolens_lightning.schema import read_results

__all__ = ["SteeringResult", "neurons_from_results", "scan_split"]


@dataclass
class SteeringResult:
    """What :func:`~neurolens_lightning.steering.dose_response` measured; :meth:`save` writes steering.json and
    steering.html."""

    data: dict[str, Any]
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.data, **self.extra}

    def save(self, out_dir: "str | Path", report: bool = True) -> Path:
        """Write ``steering.json`` (and ``steering.html``) into ``out_dir`` atomically."""
        data = json_safe(self.to_dict())

        def write(tmp: Path) -> None:
            (tmp / "steering.json").write_text(json.dumps(data, indent=1, allow_nan=False), encoding="utf-8")
            if report:
                write_steering_report(data, tmp / "steering.html")

        return publish(out_dir, write)


def neurons_from_results(path: "str | Path", which: str = "validated") -> tuple[list[tuple[int, int]], dict[str, Any]]:
    """The neurons of an earlier scan's results.json, and that results dict.

    ``which``: ``validated`` (default: validated for a drop — ablating them lowers y, so turning
    them up is predicted to raise it, steering direction +1), ``suppressors`` (validated for a
    rise, direction −1) or ``candidates`` (its top-k candidates, direction +1). The scan's split
    is in the returned dict: see :func:`scan_split`.
    """
    data = read_results(path, where=f"--from {path}")  # types checked: strict booleans, integer indices
    neurons = data.get("neurons") or []
    if which in ("validated", "suppressors"):
        want = "drop" if which == "validated" else "rise"
        picked = [n for n in neurons if isinstance(n.get("ablation"), dict) and n["ablation"].get("validated")
                  and n["ablation"].get("direction", "drop") == want]
        if not picked:
            what = "no neuron" if which == "validated" else "no suppressor (no neuron validated for a rise)"
            raise NeuroLensError(f"--from {path}: the scan validated {what} (run it with --ablate, or pass "
                                 "--neurons L:I to steer chosen neurons)")
    elif which == "candidates":
        picked = [n for n in neurons if n.get("role") == "candidate"][: int(data.get("top_k") or 10)]
        if not picked:
            raise NeuroLensError(f"--from {path}: the scan has no candidates to steer")
    else:
        raise NeuroLensError(f"--from: which must be validated, suppressors or candidates, got {which!r}")
    return [(int(n["layer"]), int(n["index"])) for n in picked], data


def scan_split(data: dict[str, Any]) -> dict[str, Any]:
    """The split of a scan's results dict: ``seed`` and ``holdout`` (0 and 0.5 when not recorded) and
    ``ablated`` (its neurons were validated on the held-out split of that seed and holdout).

    Example:
        >>> scan_split({"settings": {"seed": 3, "holdout": 0.25, "ablate": True}})
        {'seed': 3, 'holdout': 0.25, 'ablated': True, 'recorded': True}
        >>> scan_split({})
        {'seed': 0, 'holdout': 0.5, 'ablated': False, 'recorded': False}
    """
    st = data.get("settings") or {}
    ablated = bool(st.get("ablate")) or any(isinstance(n.get("ablation"), dict) for n in data.get("neurons") or [])
    recorded = "seed" in st and "holdout" in st
    return {"seed": int(st["seed"]) if st.get("seed") is not None else 0,
            "holdout": float(st["holdout"]) if st.get("holdout") is not None else 0.5,
            "ablated": ablated, "recorded": recorded}

