"""Steering: turn chosen neurons down or up and watch the model's outputs move (DESIGN §7).

Two verbs:

* :func:`steer` — a context manager that multiplies the chosen neurons' activations by a
  scale (``scale=0`` is zero ablation, 1 leaves them, > 1 amplifies), or sets them to a value,
  at every position, around any code of yours: ``model.generate(...)``, a classifier forward,
  a torchvision model. The hooks are removed on exit, also when the body raises, so the
  model's outputs afterwards are bit-identical to before.
* :func:`dose_response` — the whole experiment: y on concept and control inputs at each scale
  with bootstrap CIs, the steering effect judged against random neurons, and before/after
  outputs people can read (GPT-2: target log-prob, top-5 next tokens and a short greedy
  continuation; masked LM: top-5 fills; probe head: p(concept); ResNet: top-5 classes). Its
  :class:`SteeringResult` saves ``steering.json`` and ``steering.html``.

**The verdict needs a null.** Any neuron with a non-zero effect moves y smoothly with its
scale, so a trend test across the scales is "significant" for random neurons too (measured on
MiniLM: 14/14 random single neurons and 5/5 random 7-neuron sets "monotonic"). The verdict is
therefore a comparison with random neurons (:func:`null_test`):

* per input, the **effect** ``e = y(highest scale) − y(lowest scale)``;
* the statistic ``T = direction × mean of e over the concept inputs``, with ``direction = +1``
  when turning the neurons up is predicted to raise y (neurons validated for a drop: ablating
  them lowers y) and ``−1`` when it is predicted to lower it (validated for a rise, suppressors);
* the **null**: random sets of the same size drawn from the same layers with the same count
  per layer (never one of the steered neurons), steered identically — the same two scales on
  the same inputs, through the same batched hook — each giving its own ``T``;
* ``p_null`` is one-sided (a large ``T`` in the predicted direction), the sequential empirical
  p of :func:`neurolens_lightning.ablation.sequential_p` (Besag & Clifford 1991): 19 sets first,
  doubling while fewer than ``h = 10`` null sets reach ``T``, at most ``null_sets`` (199); exact
  for a set exchangeable with the null, with a floor of ``1 / (null_sets + 1)``;
* **verdict** ``beyond_null = p_null <= alpha``;
* secondary, the concept-vs-control contrast ``T_spec = direction × (mean_concept e −
  mean_control e)`` against the same null sets' ``T_spec``: ``p_null_specific`` (one-sided);
* ``wrong_direction_share``: the share of concept inputs with ``direction × e < 0`` (steering
  vectors reverse on up to half the inputs of some datasets, Tan et al. 2024).

Descriptive only (no verdict): Page's L test of an ordered trend across the scales, each input
a block (two-sided, ``p_trend``; ``monotonic`` = the mean y strictly ordered by the scale and
``p_trend < alpha``), and a two-sided Mann-Whitney test of the per-input slopes of y on the
scale, concept against control inputs (``p_specific``; ``mw_side`` says which side is larger).
Modes ``set`` and ``mean`` have no null (the predicted sign of ``y(setting) − y(clean)`` depends
on each neuron's activations): their ``test`` says so (``null: "none"``, ``beyond_null: null``).

Inputs: ``inputs="heldout"`` (default) steers on the held-out split of ``seed``/``holdout`` —
the very inputs on which a scan with that split validated its neurons; ``inputs="ranking"``
steers on the ranking split, disjoint from them (``neurolens steer --from`` picks it for a scan
that ablated). ``steering.json`` records ``inputs``, ``seed`` and ``holdout``.

Modules: :mod:`~.intervention` (:func:`steer`), :mod:`~.dose` (:func:`dose_response`), :mod:`~.null`
(the random-neuron null), :mod:`~.replicas` (many steerings per forward), :mod:`~.readout` (the
before/after outputs), :mod:`~.result` (:class:`SteeringResult`, reading a scan's neurons); the trend
statistics are in :mod:`neurolens_lightning.functional.trend`.

Example:
    >>> import neurolens_lightning as nl
    >>> with nl.steer(model, [(3, 1125)], scale=4.0):                     # doctest: +SKIP
    ...     out = model.generate(**inputs, max_new_tokens=10)
    >>> res = nl.dose_response("minilm", "royalty", [(1, 1035)])           # doctest: +SKIP
    >>> res.to_dict()["test"]["beyond_null"], res.to_dict()["test"]["p_null"]  # doctest: +SKIP
    >>> res.save("reports/steer-royalty")                                   # doctest: +SKIP
"""

from neurolens_lightning.functional.trend import monotonic_test, slope_per_input
from neurolens_lightning.steering.dose import DEFAULT_SCALES, INPUTS, SCHEMA_VERSION, dose_response
from neurolens_lightning.steering.intervention import steer
from neurolens_lightning.steering.null import draw_null_sets, null_sets_design, null_test
from neurolens_lightning.steering.result import SteeringResult, neurons_from_results, scan_split

__all__ = [
    "steer", "dose_response", "SteeringResult", "neurons_from_results", "scan_split", "null_test",
    "null_sets_design", "draw_null_sets", "monotonic_test", "slope_per_input", "DEFAULT_SCALES", "INPUTS",
    "SCHEMA_VERSION",
]
