"""ONNX export of the tiny model's run: tf2onnx conversion, the parity check, ONNX Runtime predict."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.conftest import FAST

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def onnx_run(alternating_run):
    """``stage=export export.format=all`` on the shared tiny run (parity on every val image)."""
    from orchestrator.app import run
    from tests.conftest import compose_cfg

    run_dir, _ = alternating_run
    run(
        compose_cfg([*FAST, "stage=export", "steps=4", "export.format=all", "export.score_threshold=0.0"]),
        run_dir,
    )
    return run_dir


def test_both_detectors_convert_and_match_their_saved_models(onnx_run):
    import onnx

    figures = json.loads((onnx_run / "export" / "parity.json").read_text())
    for model in ("alternating", "end_to_end"):
        exported = onnx_run / "export" / model
        graph = onnx.load(str(exported / "model.onnx"))
        assert graph.opset_import[0].version == 17
        assert [i.name for i in graph.graph.input] == ["input_tensor"]
        assert figures[model]["passed"] and figures[model]["images"] == 6
        assert figures[model]["detections_checked"] > 0  # threshold 0: every detection needs its twin
        assert (exported / "saved_model" / "saved_model.pb").exists()


def test_a_perturbed_onnx_model_fails_parity_naming_the_worst_case(onnx_run, tmp_path):
    import onnx
    from onnx import numpy_helper

    from orchestrator.outputs import detectors, parity

    exported = onnx_run / "export" / "alternating"
    model = onnx.load(str(exported / "model.onnx"))
    weights = max(model.graph.initializer, key=lambda t: int(np.prod(t.dims)) if t.data_type == 1 else 0)
    perturbed = numpy_helper.to_array(weights) * 1.5  # the largest float weight tensor, scaled
    weights.CopyFrom(numpy_helper.from_array(perturbed.astype(np.float32), weights.name))
    onnx.save(model, str(tmp_path / "perturbed.onnx"))

    records = json.loads((onnx_run / "export" / "parity.json").read_text())  # untouched by the failure below
    figures = parity.check(
        detectors.saved_model_detector(exported / "saved_model"),
        detectors.onnx_detector(tmp_path / "perturbed.onnx"),
        detectors.record_images(_val_records(onnx_run), 6),
        0.0,
    )
    assert not figures["passed"] and figures["mismatches"] > 0
    with pytest.raises(
        parity.ParityError, match=r"ONNX parity failed for perturbed: \d+ detections without a twin"
    ):
        parity.write_and_raise(figures, tmp_path / "parity.json", "perturbed")
    assert records["alternating"]["passed"]


def test_predict_on_onnx_runtime_draws_and_lists_what_the_saved_model_does(onnx_run, tmp_path):
    from PIL import Image

    from orchestrator.app import run
    from orchestrator.data.shapes import ShapesParams, render_image
    from tests.conftest import compose_cfg

    rng = np.random.default_rng(5)
    for i in range(2):
        Image.fromarray(render_image(rng, ShapesParams())[0]).save(tmp_path / f"photo{i}.png")
    found = {}
    for runtime in ("saved_model", "onnx"):
        overrides = [*FAST, "stage=predict", "steps=4", f"predict.images={tmp_path}", f"predict.runtime={runtime}",
                     "predict.score_threshold=0.0", "export.format=all", "export.score_threshold=0.0"]  # fmt: skip
        run(compose_cfg(overrides), onnx_run)
        out = onnx_run / "predict" / "alternating"
        assert sorted(p.name for p in out.glob("*.png")) == ["photo0.png", "photo1.png"]
        found[runtime] = json.loads((out / "detections.json").read_text())
    assert len(found["onnx"]) == len(found["saved_model"]) > 0
    for name in ("photo0.png", "photo1.png"):
        best = {r: max(d["score"] for d in found[r] if d["image_id"] == name) for r in found}
        assert best["onnx"] == pytest.approx(best["saved_model"], abs=0.01)


def _val_records(run_dir) -> str:
    from orchestrator.layout import stage_dir
    from orchestrator.odapi import builder

    configs = builder.load_configs(stage_dir(run_dir, "s4_detector_head") / "pipeline.config")
    return configs["eval_input_configs"][0].tf_record_input_reader.input_path[0]
