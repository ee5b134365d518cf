"""NeuroLens: find the neurons that encode a concept, prove it causally, and report it.

Example:
    >>> import neurolens_lightning as nl
    >>> result = nl.scan(model="minilm", concept="royalty", top_k=10)   # doctest: +SKIP
    >>> result.save("reports/minilm-royalty")                            # doctest: +SKIP

Every public name is importable from the top level (``from neurolens_lightning import
NeuroLensCallback, TextClassifier, scan``). The names are loaded lazily (PEP 562 ``__getattr__``):
``import neurolens_lightning`` imports neither torch nor Lightning, so the ``neurolens`` command
starts fast; the first access to a name imports the module that defines it.
"""

from __future__ import annotations

import importlib
import importlib.util
from typing import TYPE_CHECKING, Any

from neurolens_lightning.errors import ModelLoadError, NeuroLensError, ProbeError

# ``compare`` is both a submodule and a function: importing the submodule binds the package attribute
# ``compare`` to the module, which would hide a lazily loaded function for good. Importing it here
# (numpy; no torch, plotly or Lightning at module level; the CLI imports it anyway) binds the function.
from neurolens_lightning.compare import compare

__version__ = "0.1.0"

# public name -> the module that defines it
_LAZY: dict[str, str] = {
    # scanning
    "scan": "neurolens_lightning.api",
    "ScanResult": "neurolens_lightning.results",
    "load_model": "neurolens_lightning.registry",
    "REGISTRY": "neurolens_lightning.registry",
    "Concept": "neurolens_lightning.concepts",
    "load_concept": "neurolens_lightning.concepts",
    "builtin_concept_names": "neurolens_lightning.concepts",
    # metrics (torchmetrics)
    "Selectivity": "neurolens_lightning.metrics",
    "Consistency": "neurolens_lightning.metrics",
    "Importance": "neurolens_lightning.metrics",
    # Lightning: the callback, the fine-tuning wrappers, the probe / ablation modules
    "NeuroLensCallback": "neurolens_lightning.training.callback",
    "TextClassifier": "neurolens_lightning.training.finetune",
    "CausalLM": "neurolens_lightning.training.finetune",
    "ImageClassifier": "neurolens_lightning.training.finetune",
    "ProbeModule": "neurolens_lightning.training.modules",
    "AblationModule": "neurolens_lightning.training.modules",
    "ConceptDataModule": "neurolens_lightning.training.modules",
    # acting on what was found: steering and its dose-response
    "steer": "neurolens_lightning.steering",
    "dose_response": "neurolens_lightning.steering",
    "SteeringResult": "neurolens_lightning.steering",
    # configs (OmegaConf structured dataclasses)
    "ScanConfig": "neurolens_lightning.config",
    "CompareConfig": "neurolens_lightning.config",
    "CallbackConfig": "neurolens_lightning.config",
    "EvalConfig": "neurolens_lightning.config",
    "load_config": "neurolens_lightning.config",
}

__all__ = [
    "scan", "compare", "ScanResult", "load_model", "REGISTRY", "Concept", "load_concept", "builtin_concept_names",
    "steer", "dose_response", "SteeringResult",
    "NeuroLensCallback", "TextClassifier", "CausalLM", "ImageClassifier",
    "ProbeModule", "AblationModule", "ConceptDataModule",
    "ScanConfig", "CompareConfig", "CallbackConfig", "EvalConfig", "load_config",
    "Selectivity", "Consistency", "Importance",
    "NeuroLensError", "ProbeError", "ModelLoadError", "__version__",
]


def __getattr__(name: str) -> Any:
    """Load a public name (or a submodule) on first access and cache it in the package namespace."""
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
    elif not name.startswith("_") and importlib.util.find_spec(f"{__name__}.{name}") is not None:
        # a submodule (``nl.registry``) without an explicit import, as when the package imported them eagerly
        value = importlib.import_module(f"{__name__}.{name}")
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))


if TYPE_CHECKING:  # static analysers and IDEs see the real imports
    from neurolens_lightning.api import scan
    from neurolens_lightning.training.callback import NeuroLensCallback
    from neurolens_lightning.concepts import Concept, builtin_concept_names, load_concept
    from neurolens_lightning.config import CallbackConfig, CompareConfig, EvalConfig, ScanConfig, load_config
    from neurolens_lightning.training.finetune import CausalLM, ImageClassifier, TextClassifier
    from neurolens_lightning.metrics import Consistency, Importance, Selectivity
    from neurolens_lightning.training.modules import AblationModule, ConceptDataModule, ProbeModule
    from neurolens_lightning.registry import REGISTRY, load_model
    from neurolens_lightning.results import ScanResult
