"""The one place where third-party code is patched.

tf-slim 1.1.0 (its last release) calls ``control_flow_ops.case`` and
``control_flow_ops.cond`` from ``tf_slim/data/tfexample_decoder.py``; TensorFlow 2.15 moved
both, so the OD API's ``TfExampleDecoder`` dies with ``AttributeError: module
'tensorflow.python.ops.control_flow_ops' has no attribute 'case'``. We put the two functions
back. ``apply()`` is idempotent and must run before anything imports ``object_detection``;
:mod:`orchestrator.odapi` calls it, so import the OD API through that module. The pinned
versions and why: "Compatibility with TensorFlow and the OD API" in ``docs/architecture.md``.
"""

from __future__ import annotations

import os

_applied = False


def apply() -> None:
    """Apply every known patch once."""
    global _applied
    if _applied:
        return
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    from tensorflow.python.ops import control_flow_ops

    if not hasattr(control_flow_ops, "case"):
        control_flow_ops.case = tf.case
    if not hasattr(control_flow_ops, "cond"):
        control_flow_ops.cond = tf.compat.v1.cond
    _applied = True
