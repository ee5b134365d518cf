"""Pure functions behind the metrics: moments, effect sizes, p-values, consistency, importance, and the
statistics of the ranking and the causal test (multiple testing, bootstrap, sequential p-values), the
dose-response trend tests and the Jensen-Shannon divergence of the comparison.

The :mod:`neurolens_lightning.metrics` classes only accumulate state and call these.
"""

from neurolens_lightning.functional.consistency import consistency, consistency_from_effects, group_effects
from neurolens_lightning.functional.divergence import js_divergence
from neurolens_lightning.functional.importance import importance
from neurolens_lightning.functional.moments import class_moments, mean_var
from neurolens_lightning.functional.selectivity import cohens_d, selectivity, welch_t_test
from neurolens_lightning.functional.statistics import (bh_qvalues, bootstrap_ci, bootstrap_means, holm_adjust,
                                                      sequential_p, specificity_p, studentize)
from neurolens_lightning.functional.trend import monotonic_test, slope_per_input

__all__ = ["class_moments", "mean_var", "cohens_d", "welch_t_test", "selectivity", "group_effects",
           "consistency_from_effects", "consistency", "importance", "bh_qvalues", "holm_adjust", "bootstrap_means",
           "bootstrap_ci", "specificity_p", "sequential_p", "studentize", "js_divergence", "monotonic_test",
           "slope_per_input"]
