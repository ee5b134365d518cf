"""NeuroLens: find the neurons that encode a concept, prove it causally, and report it.

Example:
    >>> import neurolens_lightning as nl
    >>> result = nl.scan(model="minilm", concept="royalty", top_k=10)   # doctest: +SKIP
    >>> result.save("reports/minilm-royalty")                            # doctest: +SKIP
"""

from neurolens_lightning.api import scan
from neurolens_lightning.concepts import Concept, builtin_concept_names, load_concept
from neurolens_lightning.errors import ModelLoadError, NeuroLensError, ProbeError
from neurolens_lightning.registry import REGISTRY, load_model
from neurolens_lightning.results import ScanResult

__version__ = "0.1.0"

__all__ = ["scan", "Concept", "load_concept", "builtin_concept_names", "load_model", "REGISTRY", "ScanResult",
           "NeuroLensError", "ProbeError", "ModelLoadError", "__version__"]
