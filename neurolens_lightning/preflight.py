"""Every check that needs no model, run before any work (and before torch is imported): the settings, the
model's name (and its layer count where its registry entry or ``config.json`` says it), the probe and its split,
and the output folder. A command refuses bad input here, in one line, in well under two seconds.

Example:
    >>> from neurolens_lightning.settings import ScanSettings
    >>> pf = preflight("minilm", "royalty", ScanSettings(layers=[2, 3]))
    >>> pf.concept.name, pf.facts.n_layers
    ('royalty', 6)
    >>> preflight("minilm", "royalty", ScanSettings(layers=[99]))
    Traceback (most recent call last):
    ...
    neurolens_lightning.errors.NeuroLensError: layer(s) [99] out of range for minilm: it has 6 layers, valid indices are 0..5 (0 = closest to the input)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

from neurolens_lightning.catalog import ModelFacts, model_facts
from neurolens_lightning.concepts import Concept, load_concept
from neurolens_lightning.errors import NeuroLensError
from neurolens_lightning.io import Output, check_out
from neurolens_lightning.settings import ScanSettings

__all__ = ["Preflight", "preflight", "check_layers", "check_units", "check_modality"]


@dataclass
class Preflight:
    """What the checks established: the model's facts, the probe, and the checked output folder (or None)."""

    facts: ModelFacts
    concept: Concept
    output: Output | None = None


def check_layers(layers: Sequence[int] | None, n_layers: int | None, name: str, what: str = "layer(s)") -> None:
    """Refuse layer indices that are not integers in ``0..n_layers-1`` (the range is not checked when
    ``n_layers`` is unknown) and a list that names a layer twice. The one rule for ``--layers``: the adapters'
    ``select_sites`` applies it too, once the model is loaded."""
    if not layers:
        return
    bad = [l for l in layers if not isinstance(l, int) or isinstance(l, bool)
           or (n_layers is not None and not 0 <= l < n_layers)]
    if bad:
        raise NeuroLensError(f"{what} {bad} out of range for {name}: it has {n_layers} layers, valid indices are "
                             f"0..{n_layers - 1} (0 = closest to the input)" if n_layers is not None else
                             f"{what} {bad} are not layer indices (integers >= 0, 0 = closest to the input)")
    if len(set(layers)) != len(layers):
        raise NeuroLensError(f"layers {list(layers)} contain duplicates; list each layer once")


def check_units(neurons: Sequence[tuple[int, int]], facts: ModelFacts) -> None:
    """Refuse a named neuron whose index is beyond its layer's width (when the width is known here)."""
    for layer, index in neurons:
        units = facts.units_of(layer)
        if units is not None and not 0 <= index < units:
            raise NeuroLensError(f"neuron {layer}:{index}: index out of range, layer {layer} has {units} units "
                                 f"(0..{units - 1})")


def check_modality(facts: ModelFacts, concept: Concept) -> None:
    """Refuse a text probe for an image model and the reverse."""
    if facts.modality and facts.modality != concept.modality:
        article = "an" if facts.modality == "image" else "a"
        raise NeuroLensError(f"concept {concept.name!r} is a {concept.modality} probe but {facts.name} is {article} "
                             f"{facts.modality} model; choose {article} {facts.modality} concept (see `neurolens "
                             "concepts`)")


def preflight(model: Any, concept: Any, settings: ScanSettings, *, arch: str | None = None, site: str | None = None,
              also: Sequence[Any] = (), out: "str | Path | None" = None, overwrite: bool = False) -> Preflight:
    """Check everything about a scan that needs no model; raise :class:`NeuroLensError` (one line) on the first
    problem. ``out`` (when given) is checked with :func:`neurolens_lightning.io.check_out`."""
    settings.check()
    facts = model_facts(model, arch=arch, site=site)
    probe = load_concept(concept)
    check_modality(facts, probe)
    settings.split(probe)  # a probe too small for the requested split fails here, naming the part and the fix
    check_layers(settings.layers, facts.n_layers, facts.name)
    named = settings.named_neurons() or []
    check_layers(sorted({l for l, _ in named}), facts.n_layers, facts.name, what="named neuron layer(s)")
    check_units(named, facts)
    for l, i in named:
        if settings.layers is not None and l not in settings.layers:
            raise NeuroLensError(f"neuron {l}:{i}: layer {l} was not scanned (scanned layers: "
                                 f"{sorted(settings.layers)}); add it to --layers")
    for extra in also:
        check_modality(facts, load_concept(extra))
    output = check_out(out, overwrite=overwrite) if out is not None else None
    return Preflight(facts, probe, output)
