"""Causal validation: intervene on neurons and compare with a random-neuron null (DESIGN §3).

Every tested neuron (top-k candidates, suppressors if asked for, named neurons) is intervened on — by
default an interchange with concept-absent activity — on held-out concept and control inputs; its Δ of y
is judged against random neurons of the same layer treated exactly the same way, Holm over all tested
neurons, plus a specificity test, a joint-set test and an audit of neurons the ranking calls unimportant.

* :mod:`~neurolens_lightning.ablation.plan` — what is tested, in which direction, against which null
  (:class:`AblationJob`, :class:`AblationPlan`, :func:`plan_ablation`, :data:`DIRECTION_RULES`, :data:`QUESTIONS`);
* :mod:`~neurolens_lightning.ablation.runner` — the four interventions, their concept-absent sources and
  :class:`AblationRunner`, which measures Δ for every job in batched, replicated forwards;
* :mod:`~neurolens_lightning.ablation.statistics` — :func:`summarize_ablation`: CIs, p-values, Holm, the
  verdict of each neuron (:func:`decide`, :func:`verdict_word`), the joint set and the audit;
* :mod:`~neurolens_lightning.ablation.loop` — :func:`run_ablation`: the held-out inputs in chunks, the
  first pass, the adaptive null rounds and :func:`finish_ablation`.

The pure statistics (bootstrap, Besag-Clifford sequential p, Holm) live in
:mod:`neurolens_lightning.functional.statistics`; :func:`bootstrap_ci` and :func:`sequential_p` are
re-exported here.

Example:
    >>> result = scan("minilm", "royalty", ablate=True, top_k=5)     # doctest: +SKIP
    >>> result.ablation_summary["joint_beyond_null"]                  # doctest: +SKIP
"""

from neurolens_lightning.ablation.loop import (ablation_inputs, chunk_generator, encode_chunk, finish_ablation,
                                               held_out_split_text, run_ablation, y_description)
from neurolens_lightning.ablation.plan import (DIRECTION_RULES, QUESTIONS, AblationJob, AblationPlan,
                                               check_ablation_args, null_size_needed, plan_ablation)
from neurolens_lightning.ablation.runner import AblationRunner, make_runner, tensor_nbytes
from neurolens_lightning.ablation.statistics import decide, summarize_ablation, verdict_word
from neurolens_lightning.functional.statistics import bootstrap_ci, sequential_p

__all__ = [
    # plan
    "AblationJob", "AblationPlan", "DIRECTION_RULES", "QUESTIONS", "check_ablation_args", "null_size_needed",
    "plan_ablation",
    # runner
    "AblationRunner", "make_runner", "tensor_nbytes",
    # statistics
    "decide", "summarize_ablation", "verdict_word", "bootstrap_ci", "sequential_p",
    # loop
    "ablation_inputs", "chunk_generator", "encode_chunk", "finish_ablation", "held_out_split_text", "run_ablation",
    "y_description",
]
