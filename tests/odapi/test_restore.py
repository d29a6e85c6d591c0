"""Source.kind(): what a checkpoint path holds, and a clear UserError naming it when nothing usable.

Fast: small ``tf.train.Checkpoint`` files of plain variables, no model build.
"""

from __future__ import annotations

import pytest
import tensorflow as tf

from orchestrator.odapi.restore import RestoreError, Source
from stages.errors import UserError


def _write(tmp_path, name: str, **objects) -> str:
    return tf.train.Checkpoint(**objects).write(str(tmp_path / name))


def test_kind_reads_the_checkpoint_root(tmp_path):
    layer = tf.Module()
    layer.kernel = tf.Variable([1.0, 2.0])
    classification = _write(tmp_path, "classification", feature_extractor=layer)
    detection = _write(tmp_path, "detection", model=layer)
    assert Source("fresh").kind() == "fresh"
    assert Source("backbone", classification).kind() == "classification"
    assert Source("s1_rpn", detection).kind() == "detection"
    other = _write(tmp_path, "other", optimizer_state=layer)
    with pytest.raises(
        RestoreError, match=r"backbone.checkpoint=.*other: neither a classification .*'optimizer_state'"
    ):
        Source("backbone", other).kind()


def test_a_path_with_no_checkpoint_is_a_user_error_naming_it(tmp_path):
    missing = tmp_path / "nowhere" / "ckpt-3"
    with pytest.raises(RestoreError) as info:
        Source("backbone", str(missing)).kind()
    assert isinstance(info.value, UserError)
    assert str(info.value).startswith(f"backbone.checkpoint={missing}: no checkpoint there")
    with pytest.raises(RestoreError, match=f"s2_fast_rcnn: {tmp_path}: no checkpoint there"):
        Source("s2_fast_rcnn", str(tmp_path)).kind()  # a directory without a 'checkpoint' file


def test_a_file_that_is_not_a_checkpoint_is_a_user_error_naming_it(tmp_path):
    bogus = tmp_path / "model.pb"
    bogus.write_bytes(b"not a checkpoint at all")
    with pytest.raises(RestoreError) as info:
        Source("backbone", str(bogus)).kind()
    assert str(info.value).startswith(
        f"backbone.checkpoint={bogus}: not a TensorFlow checkpoint (DataLossError"
    )
