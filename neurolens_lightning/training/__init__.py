"""NeuroLens during training: Lightning modules, fine-tuning wrappers, the callback and the eval run.

* :mod:`~neurolens_lightning.training.callback` - :class:`NeuroLensCallback`: concept probes while a network trains;
  :mod:`~neurolens_lightning.training.emergence` its history and :mod:`~neurolens_lightning.training.reports` its
  logged metrics, W&B charts and report files.
* :mod:`~neurolens_lightning.training.modules` - ``ProbeModule`` / ``AblationModule`` / ``ConceptDataModule``:
  scoring and ablation as ``Trainer.validate`` runs.
* :mod:`~neurolens_lightning.training.finetune` - ``TextClassifier``, ``CausalLM``, ``ImageClassifier``.
* :mod:`~neurolens_lightning.training.eval` - :func:`run_eval`, the run behind ``neurolens eval``.

Nothing is imported here: ``import neurolens_lightning.training`` stays free of torch and Lightning.
"""
