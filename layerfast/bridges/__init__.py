"""Bridges to third-party libraries, each importing only the stages it adapts and its library
only when used:

* ``lm_eval_tasks`` (multiple choice) and ``lm_eval_gen_tasks`` (``generate_until``), loaded
  by ``lm_eval_load``: lm-evaluation-harness tasks as layerfast tasks (``lm_eval:<task>``);
* ``lm_eval_model`` (with ``lm_eval_args``, and ``lm_eval_generate`` for ``generate_until``) and
  ``lm_eval_registration``: layerfast as a harness model (``"layerfast"``, public as
  :mod:`layerfast.harness`);
* ``shapiq``: our games as shapiq games and back.
"""
