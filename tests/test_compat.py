"""orchestrator/compat.py on whichever stack is installed: each adaptation where, and only where,
its versions need it; stand-ins that raise on use."""

from __future__ import annotations

import importlib
import os
import sys
from pathlib import Path

import pytest

from orchestrator import compat


def test_a_stand_in_raises_naming_what_is_missing_and_why():
    stand_in = compat.StandIn("pkg.mod", "pkg 2 has no mod")
    with pytest.raises(compat.StandInError, match=r"pkg\.mod\.thing is not available: pkg 2 has no mod"):
        stand_in.thing  # noqa: B018
    assert isinstance(compat.StandInError("x"), AttributeError)  # hasattr() stays False, never a fake
    assert not hasattr(stand_in, "__path__")  # introspection sees a plain module


def test_a_stand_in_is_importable_only_inside_its_block():
    stand_in = compat.StandIn("frcnn_alt_no_such_module", "test")
    with compat._visible("frcnn_alt_no_such_module", stand_in):
        import frcnn_alt_no_such_module  # noqa: F401

        assert sys.modules["frcnn_alt_no_such_module"] is stand_in
    assert "frcnn_alt_no_such_module" not in sys.modules
    with compat._visible("os", stand_in):  # a real module is never replaced
        assert sys.modules["os"] is os


def test_tensorflow_was_imported_with_the_keras_the_od_api_needs():
    import tensorflow as tf

    version = compat._version(tf.__version__)
    assert compat.installed_tensorflow() == version
    if version >= (2, 16):
        assert os.environ.get("TF_USE_LEGACY_KERAS") == "1"
        assert tf.keras.__name__.startswith("tf_keras"), tf.keras.__name__
    else:
        assert "TF_USE_LEGACY_KERAS" not in os.environ  # TF 2.15 would look for tf_keras


def test_od_api_modules_imported_with_stand_ins_raise_on_use():
    import tensorflow as tf

    from orchestrator.odapi import inputs, model_lib

    deepmac_meta_arch = sys.modules["object_detection.meta_architectures.deepmac_meta_arch"]

    if compat._version(tf.__version__) < (2, 16):
        assert not isinstance(model_lib.tf_estimator, compat.StandIn)  # the real Estimator
        return
    for module in (model_lib, inputs):
        assert isinstance(module.tf_estimator, compat.StandIn)
        with pytest.raises(compat.StandInError, match="has no Estimator"):
            module.tf_estimator.ModeKeys  # noqa: B018
    assert "tensorflow.compat.v1.estimator" not in sys.modules
    if isinstance(deepmac_meta_arch.tfio, compat.StandIn):
        with pytest.raises(compat.StandInError, match="tensorflow-io is not installed"):
            deepmac_meta_arch.tfio.experimental  # noqa: B018
        assert "tensorflow_io" not in sys.modules


def test_font_getsize_as_pillow_9_measured_it():
    """``visualization_utils.draw_bounding_box_on_image`` calls ``font.getsize``: on Pillow >= 10
    compat restores it; these figures are Pillow 9.5.0's own."""
    import matplotlib
    from PIL import Image, ImageFont

    from orchestrator import odapi  # noqa: F401  (compat applied before the OD API loads)

    visualization_utils = importlib.import_module("object_detection.utils.visualization_utils")

    ttf = Path(matplotlib.__file__).parent / "mpl-data" / "fonts" / "ttf" / "DejaVuSans.ttf"
    font = ImageFont.truetype(str(ttf), 24)
    assert font.getsize("person: 87%") == (151, 28)
    assert font.getsize("circle: 100%", stroke_width=2) == (152, 27)
    bitmap = getattr(ImageFont, "load_default_imagefont", ImageFont.load_default)()
    assert bitmap.getsize("person: 87%") == (66, 11)

    image = Image.new("RGB", (64, 48))
    visualization_utils.draw_bounding_box_on_image(
        image, 0.2, 0.2, 0.8, 0.8, display_str_list=["circle: 99%"]
    )
    assert image.getbbox() is not None  # the box and its label were drawn
