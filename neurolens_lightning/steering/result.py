"""What a steering measured (:class:`SteeringResult`: steering.json + steering.html); the scan it starts from is
read by :func:`neurolens_lightning.schema.neurons_from_results` and :func:`~neurolens_lightning.schema.scan_split`
(re-exported here)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurolens_lightning.io import json_safe, publish
from neurolens_lightning.report.steering_page import write_steering_report
from neurolens_lightning.schema import neurons_from_results, scan_split  # noqa: F401 - re-exported

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
