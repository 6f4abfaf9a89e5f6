"""Bridges to third-party libraries, each importing only the stages it adapts and its library
only when used:

* ``lm_eval_tasks``: lm-evaluation-harness tasks as layerfast tasks (``lm_eval:<task>``);
* ``lm_eval_model`` and ``lm_eval_registration``: layerfast as a harness model (``"layerfast"``,
  public as :mod:`layerfast.harness`);
* ``shapiq``: our games as shapiq games and back.
"""
