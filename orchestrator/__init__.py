"""frcnn-alt orchestrator: running, chaining, evaluating and reporting stages.

Entry point: ``python -m orchestrator`` (see ``orchestrator/__main__.py``).
"""
