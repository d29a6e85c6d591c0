"""stage=predict checks every image before it loads a model or writes anything."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from orchestrator.data.validate import DataValidationError
from orchestrator.outputs.predict import check_images, predict
from stages.spec import Runtime


def png(path: Path) -> Path:
    Image.fromarray(np.full((16, 16, 3), 90, dtype=np.uint8)).save(path)
    return path


def test_good_images_pass(tmp_path):
    check_images([png(tmp_path / "a.png"), png(tmp_path / "b.png")])


def test_text_file_named_jpg_and_truncated_png_are_named(tmp_path):
    good = png(tmp_path / "good.png")
    text = tmp_path / "notes.jpg"
    text.write_text("not an image")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "PNG")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])  # header fine, pixels cut off
    with pytest.raises(DataValidationError) as info:
        check_images([good, text, truncated])
    message = str(info.value)
    assert message.startswith("predict.images: 2 of 3 files are not readable images: ")
    assert f"{text} (not an image PIL can identify)" in message
    assert f"{truncated} (image file is truncated" in message
    assert str(good) not in message
    assert message.endswith("Nothing was written: fix or remove them and rerun")


def test_predict_stops_before_loading_the_model_or_writing(tmp_path):
    bad = tmp_path / "bad.jpg"
    bad.write_text("not an image")
    out = tmp_path / "predict"
    with pytest.raises(DataValidationError, match="bad.jpg"):
        predict(
            tmp_path / "no-model",
            Runtime.saved_model,
            "no-label-map",
            [png(tmp_path / "ok.png"), bad],
            out,
            0.5,
        )
    assert not out.exists()
