"""Error types raised for user mistakes.

Every user-facing problem (bad probe file, unknown model, layer out of range, missing
weights ...) is raised as a :class:`NeuroLensError` whose message names the problem and
the fix. The CLI prints the message alone (no traceback) and exits with status 2.
"""

from __future__ import annotations


class NeuroLensError(ValueError):
    """A problem with the user's input or environment, with a message that says how to fix it."""


class ProbeError(NeuroLensError):
    """A concept probe (JSON file or object) is malformed."""


class ModelLoadError(NeuroLensError):
    """A model name/path could not be resolved to weights on this machine."""
