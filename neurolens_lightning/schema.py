"""The files NeuroLens writes — results.json, steering.json, comparison.json — as typed structures, their
versions, the key names that several modules read, and one validating reader.

Writers build these dicts (``ScanResult.to_dict``, ``SteeringResult``, ``build_comparison``); every reader (the
report pages, the CLI's printing, W&B, ``neurolens steer --from``) reads the same keys. A file read back from disk
goes through :func:`read_results`, which checks the types a reader relies on (strict booleans, integer indices,
lists where lists belong) and names the key and the fix in one line instead of failing later or, worse,
treating the string ``"false"`` as true.

Example:
    >>> data = read_results({"schema_version": 2, "neurons": [{"layer": 5, "index": 17, "role": "candidate",
    ...                      "ablation": {"validated": True, "causal": True, "direction": "drop"}}]})
    >>> [neuron_key(n) for n in data[NEURONS]]
    [(5, 17)]
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Mapping, Optional, TypedDict

from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.settings import format_neuron, parse_neuron

__all__ = ["neurons_from_results", "scan_split", "RESULTS_VERSION", "STEERING_VERSION", "COMPARISON_VERSION",
           "SchemaError", "read_results",
           "neuron_key", "format_neuron", "parse_neuron", "AblationRecord", "ExampleRecord", "NeuronRecord",
           "ResultsFile", "NEURONS", "ABLATION", "ABLATION_SUMMARY", "SETTINGS", "VALIDATED", "CAUSAL", "VERDICT",
           "DELTA", "DELTA_CONTROL", "CI_LOW", "CI_HIGH", "P_VALUE", "P_HOLM", "N_VALIDATED", "WARNINGS"]

#: schema versions of the three files (a reader refuses a newer one)
RESULTS_VERSION = 2
STEERING_VERSION = 1
COMPARISON_VERSION = 1

# keys read in several modules (one spelling)
NEURONS, ABLATION, ABLATION_SUMMARY, SETTINGS, WARNINGS = "neurons", "ablation", "ablation_summary", "settings", \
    "warnings"
VALIDATED, CAUSAL, VERDICT, DELTA, DELTA_CONTROL = "validated", "causal", "verdict", "delta", "delta_control"
CI_LOW, CI_HIGH, P_VALUE, P_HOLM, N_VALIDATED = "ci_low", "ci_high", "p_value", "p_holm", "n_validated"


class AblationRecord(TypedDict, total=False):
    """A tested neuron's causal test (``neurons[i]["ablation"]``)."""

    tested_as: str
    direction: str
    delta: float
    ci_low: float
    ci_high: float
    delta_control: Optional[float]
    p_value: float
    p_holm: float
    causal: bool
    validated: bool
    verdict: str
    reasons: List[str]


class ExampleRecord(TypedDict, total=False):
    """One of a neuron's top examples (``neurons[i]["top_examples"][j]``). A text longer than 300 characters is
    stored clipped around its span with ``…`` at each cut; ``text_chars`` is then its full length."""

    activation: float
    positive: bool
    position: int
    text: str
    span: Optional[List[int]]
    text_chars: int
    image: str


class NeuronRecord(TypedDict, total=False):
    """One listed neuron (``neurons[i]``)."""

    rank: int
    layer: int
    index: int
    role: Optional[str]
    selectivity: float
    consistency: float
    importance: Optional[float]
    score: float
    ablation: AblationRecord
    top_examples: List[ExampleRecord]


class ResultsFile(TypedDict, total=False):
    """results.json (the keys its readers rely on; see ``ScanResult.to_dict`` for every key)."""

    schema_version: int
    model: str
    model_info: dict
    concept: str
    layers: List[int]
    top_k: int
    settings: dict
    warnings: List[str]
    neurons: List[NeuronRecord]
    ablation_summary: dict


class SchemaError(NeuroLensError):
    """A results file that does not have the shape its readers rely on."""


def _int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _bad(where: str, what: str) -> SchemaError:
    return SchemaError(f"{where}: {what}; pass the folder or results.json written by `neurolens scan` "
                       "(a file edited by hand must keep its types)")


def _check_neuron(n: Any, i: int, where: str) -> None:
    if not isinstance(n, Mapping):
        raise _bad(where, f"neurons[{i}] is {type(n).__name__}, not an object")
    for key in ("layer", "index"):
        if not _int(n.get(key)) or n[key] < 0:
            raise _bad(where, f"neurons[{i}].{key} is {n.get(key)!r}, not an integer >= 0")
    ab = n.get(ABLATION)
    if ab is None:
        return
    if not isinstance(ab, Mapping):
        raise _bad(where, f"neurons[{i}].ablation is {type(ab).__name__}, not an object")
    for key in (VALIDATED, CAUSAL):
        if key in ab and not isinstance(ab[key], bool):
            raise _bad(where, f"neurons[{i}].ablation.{key} is {ab[key]!r}, not true/false")
    if "direction" in ab and ab["direction"] not in ("drop", "rise"):
        raise _bad(where, f"neurons[{i}].ablation.direction is {ab['direction']!r}, not drop/rise")


def read_results(source: "str | Path | Mapping[str, Any]", where: str | None = None) -> ResultsFile:
    """Load (a path: the file or its folder) and check a results.json; returns the dict.

    Refused in one line (:class:`SchemaError`): not an object, a newer ``schema_version``, ``neurons`` not a
    list, a neuron without integer ``layer`` / ``index``, an ``ablation`` whose ``validated`` / ``causal`` are
    not booleans or whose ``direction`` is not drop / rise, ``settings`` / ``ablation_summary`` not objects.
    """
    if isinstance(source, Mapping):
        data, where = source, where or "results"
    else:
        p = Path(source)
        p = p / "results.json" if p.is_dir() else p
        where = where or str(source)
        try:
            data = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise SchemaError(f"{where}: cannot read a results.json ({e}); pass a scan's output folder or its "
                              "results.json") from None
    if not isinstance(data, Mapping):
        raise _bad(where, f"the file holds a {type(data).__name__}, not an object")
    version = data.get("schema_version", RESULTS_VERSION)
    if not _int(version) or version > RESULTS_VERSION:
        raise _bad(where, f"schema_version {version!r} is not one this NeuroLens reads (<= {RESULTS_VERSION})")
    neurons = data.get(NEURONS, [])
    if not isinstance(neurons, list):
        raise _bad(where, f"neurons is {type(neurons).__name__}, not a list")
    for i, n in enumerate(neurons):
        _check_neuron(n, i, where)
    for key in (SETTINGS, ABLATION_SUMMARY):
        if data.get(key) is not None and not isinstance(data[key], Mapping):
            raise _bad(where, f"{key} is {type(data[key]).__name__}, not an object")
    if data.get("top_k") is not None and (not _int(data["top_k"]) or data["top_k"] < 1):
        raise _bad(where, f"top_k is {data['top_k']!r}, not an integer >= 1")
    return data  # type: ignore[return-value]


def neuron_key(rec: Mapping[str, Any]) -> tuple[int, int]:
    """``(layer, index)`` of a neuron record."""
    return int(rec["layer"]), int(rec["index"])


# ---------------------------------------------------------------------------- what steer --from reads
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

