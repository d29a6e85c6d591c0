"""frcnn-alt orchestrator: running, chaining, evaluating and reporting stages.

Entry point: ``python -m orchestrator`` (see ``orchestrator/__main__.py``).

Importing this package sets the environment TensorFlow reads at its own import
(:func:`orchestrator.compat.prepare_environment`), so import ``orchestrator`` before ``tensorflow``.
"""

from orchestrator import compat as _compat

_compat.prepare_environment()
