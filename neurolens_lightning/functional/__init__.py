"""Pure functions behind the metrics: moments, effect sizes, p-values, consistency, importance.

The :mod:`neurolens_lightning.metrics` classes only accumulate state and call these.
"""

from neurolens_lightning.functional.consistency import consistency, consistency_from_effects, group_effects
from neurolens_lightning.functional.importance import importance
from neurolens_lightning.functional.moments import class_moments, mean_var
from neurolens_lightning.functional.selectivity import cohens_d, selectivity, welch_t_test

__all__ = ["class_moments", "mean_var", "cohens_d", "welch_t_test", "selectivity", "group_effects",
           "consistency_from_effects", "consistency", "importance"]

# divergences and dose-response trends (no torch in either)
from neurolens_lightning.functional.divergence import js_divergence  # noqa: E402
from neurolens_lightning.functional.trend import monotonic_test, slope_per_input  # noqa: E402

__all__ += ["js_divergence", "monotonic_test", "slope_per_input"]
