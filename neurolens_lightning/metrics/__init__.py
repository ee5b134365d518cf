"""torchmetrics metrics that accumulate the per-neuron scores in constant memory.

All state is running sums reduced with ``dist_reduce_fx="sum"`` (float64), so a DDP run
gives exactly the single-process result and memory does not grow with the examples.
"""

from neurolens_lightning.metrics.activation import MeanActivation, TopActivations
from neurolens_lightning.metrics.consistency import Consistency
from neurolens_lightning.metrics.importance import Importance
from neurolens_lightning.metrics.selectivity import Selectivity

__all__ = ["Selectivity", "Consistency", "Importance", "MeanActivation", "TopActivations"]
