"""One real ``stage=all`` on the tiny model (4 steps a stage), inspected from every side."""

from __future__ import annotations

import json

import numpy as np
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from orchestrator.layout import stage_dir
from orchestrator.odapi import builder
from stages.spec import STAGE_NAMES

pytestmark = pytest.mark.slow
STAGES = list(STAGE_NAMES)
FROZEN = {
    "s1_rpn": ["detector_features", "detector_head"],
    "s2_fast_rcnn": ["rpn"],
    "s3_rpn_shared": ["detector_features", "detector_head", "shared"],
    "s4_detector_head": ["rpn", "shared"],
    "end_to_end": [],
}


def scalars(directory) -> dict[str, list[tuple[int, float]]]:
    acc = EventAccumulator(str(directory), size_guidance={"tensors": 0, "scalars": 0})
    acc.Reload()
    out = {}
    for tag in acc.Tags()["tensors"]:
        values = [(e.step, tf.make_ndarray(e.tensor_proto)) for e in acc.Tensors(tag)]
        if all(v.size == 1 for _, v in values):  # (not images)
            out[tag] = [(step, float(v)) for step, v in values]
    return out


@pytest.mark.parametrize("name", STAGES)
def test_every_stage_writes_the_output_contract(alternating_run, name):
    run_dir, _ = alternating_run
    d = stage_dir(run_dir, name)
    metrics = json.loads((d / "metrics.json").read_text())
    done = json.loads((d / "DONE").read_text())
    assert done["fingerprint"] and done["code"] and done["data"]
    steps = 16 if name == "end_to_end" else 4
    assert metrics["steps"] == steps and metrics["wall_seconds"] > 0
    assert 200 < metrics["peak_rss_mb"] < 8 * 1024  # this stage's own high-water mark
    detection_keys = {"mAP", "mAP@0.5"} & metrics.keys()
    if name in ("s1_rpn", "s3_rpn_shared"):  # RPN stages skip the second stage: no detections
        assert detection_keys == set(), detection_keys
    else:
        assert detection_keys == {"mAP", "mAP@0.5"}
        assert 0.0 <= metrics["mAP"] <= 1.0 and 0.0 <= metrics["mAP@0.5"] <= 1.0, metrics
    assert 0.0 <= metrics["AR@100"] <= 1.0 and "recall@300_iou0.7" in metrics
    audit = metrics["frozen_audit"]
    assert audit["passed"] and audit["frozen_groups"] == FROZEN[name] and not audit["changed"]
    for group in FROZEN[name]:
        assert metrics["variables"][group]["trained"] == 0
    reader = tf.train.load_checkpoint(str(d / "checkpoints" / f"ckpt-{steps}"))
    keys = reader.get_variable_to_shape_map()
    assert any(k.startswith("model/_first_stage_box_predictor/") for k in keys)
    assert any(k.startswith("model/_mask_rcnn_box_predictor/") for k in keys)


@pytest.mark.parametrize("name", STAGES)
def test_generated_pipeline_is_a_valid_stock_config(alternating_run, name):
    run_dir, _ = alternating_run
    configs = builder.load_configs(stage_dir(run_dir, name) / "pipeline.config")
    assert configs["model"].faster_rcnn.number_of_stages == 2
    assert configs["train_config"].num_steps == (16 if name == "end_to_end" else 4)
    assert "PATH_TO_BE_CONFIGURED" not in (stage_dir(run_dir, name) / "pipeline.config").read_text()
    builder.build_model(configs, is_training=False)
    assert bool(configs["train_config"].freeze_variables) == bool(FROZEN[name])


@pytest.mark.parametrize("name", ["end_to_end", "s3_rpn_shared"])
def test_stock_train_loop_trains_on_a_generated_config_as_it_is(alternating_run, name, tmp_path):
    """model_main_tf2.py's loop takes our config and its fine-tune checkpoint without edits.

    end_to_end fine-tunes from the pre-trained backbone (a classification checkpoint), s3 from
    stage 2's checkpoint (a detection one); the stock restore asserts every object matched.
    """
    from object_detection import model_lib_v2
    from object_detection.protos import train_pb2

    run_dir, _ = alternating_run
    pipeline = stage_dir(run_dir, name) / "pipeline.config"
    train = builder.load_configs(pipeline)["train_config"]
    assert train.fine_tune_checkpoint and train.fine_tune_checkpoint_version == train_pb2.CheckpointVersion.V2
    model_lib_v2.train_loop(
        pipeline_config_path=str(pipeline),
        model_dir=str(tmp_path),
        train_steps=2,
        num_steps_per_iteration=1,
        checkpoint_every_n=1,  # (the stock default, 1000, saves only at step 0 in a 2-step run)
    )
    assert (
        tf.train.load_checkpoint(tf.train.latest_checkpoint(str(tmp_path))).get_tensor(
            "step/.ATTRIBUTES/VARIABLE_VALUE"
        )
        == 2
    )


@pytest.mark.parametrize(
    ("name", "method"), [("s4_detector_head", "alternating"), ("end_to_end", "end_to_end")]
)
def test_stock_exporter_and_evaluator_take_a_stage_directory_as_it_is(
    alternating_run, name, method, tmp_path
):
    """``exporter_main_v2.py`` and ``model_main_tf2.py --checkpoint_dir`` on a finished stage.

    Both are given what a user would give them (the stage's pipeline.config and its
    ``checkpoints/`` folder): the stock export detects what ours does, and the stock evaluator's
    mAP@0.5 is the one in the stage's metrics.json (same COCO evaluator, same val images); a
    restore that silently matched nothing (both use ``expect_partial``) would fail either check.
    """
    from google.protobuf import text_format
    from object_detection import exporter_lib_v2, model_lib_v2
    from object_detection.protos import pipeline_pb2

    from orchestrator.engine.evaluate import EVAL_PROPOSALS
    from orchestrator.layout import StageFiles
    from orchestrator.odapi import fields, tf_example_decoder
    from stages import pipeline as pipelines

    run_dir, _ = alternating_run
    stage = stage_dir(run_dir, name)
    config = pipeline_pb2.TrainEvalPipelineConfig()
    text_format.Merge((stage / "pipeline.config").read_text(), config)  # as exporter_main_v2 reads it
    exporter_lib_v2.export_inference_graph(
        "image_tensor", config, str(stage / "checkpoints"), str(tmp_path / "out")
    )

    record = builder.load_configs(stage / "pipeline.config")["eval_input_configs"][0].tf_record_input_reader
    decoded = tf_example_decoder.TfExampleDecoder().decode(
        next(iter(tf.data.TFRecordDataset(record.input_path[0])))
    )
    image = decoded[fields.InputDataFields.image][None]
    stock = tf.saved_model.load(str(tmp_path / "out" / "saved_model"))(image)
    ours = tf.saved_model.load(str(run_dir / "export" / method / "saved_model"))(image)
    n = int(ours["num_detections"][0])
    assert n == int(stock["num_detections"][0]) and n > 0
    np.testing.assert_allclose(stock["detection_boxes"][0, :n], ours["detection_boxes"][0, :n], atol=1e-5)
    np.testing.assert_allclose(stock["detection_scores"][0, :n], ours["detection_scores"][0, :n], atol=1e-5)

    # Our evaluation keeps 300 proposals (the paper's test-time count, whatever the stage trained
    # with); the stock evaluator reads that from the config, so it gets a copy that says so.
    eval_config = pipelines.load_pipeline(stage / "pipeline.config")
    eval_config.model.faster_rcnn.first_stage_max_proposals = EVAL_PROPOSALS
    model_lib_v2.eval_continuously(
        pipeline_config_path=str(pipelines.write_pipeline(eval_config, tmp_path / "eval.config")),
        model_dir=str(tmp_path / "model"),
        checkpoint_dir=str(stage / "checkpoints"),
        wait_interval=1,
        timeout=1,  # evaluate the latest checkpoint, then stop waiting for new ones
    )
    stock_metrics = scalars(tmp_path / "model" / "eval")
    stock_map50 = stock_metrics["DetectionBoxes_Precision/mAP@.50IOU"][-1][1]
    assert stock_map50 == pytest.approx(StageFiles(stage).read_metrics()["mAP@0.5"], abs=1e-6)


def test_tensorboard_scalars_line_stages_up_on_one_step_axis(alternating_run):
    run_dir, _ = alternating_run
    e2e = scalars(stage_dir(run_dir, "end_to_end") / "train")
    assert {"Loss/total_loss", "learning_rate", "Loss/BoxClassifierLoss/classification_loss"} <= set(e2e)
    assert [s for s, _ in e2e["Loss/total_loss"]] == list(range(2, 17, 2))
    s2 = scalars(stage_dir(run_dir, "s2_fast_rcnn") / "train")
    assert [s for s, _ in s2["Loss/total_loss"]] == [6, 8]
    s1 = scalars(stage_dir(run_dir, "s1_rpn") / "train")
    assert "Loss/BoxClassifierLoss/classification_loss" not in s1  # second stage skipped
    s4_eval = scalars(stage_dir(run_dir, "s4_detector_head") / "eval")
    assert [s for s, _ in s4_eval["eval/mAP"]] == [16]


def test_rerun_with_the_same_config_skips_every_stage(alternating_run, compose_config, cache_dir):
    from orchestrator.app import run
    from tests.conftest import FAST

    run_dir, final = alternating_run
    before = {n: (stage_dir(run_dir, n) / "DONE").stat().st_mtime_ns for n in STAGES}
    again = run(compose_config([*FAST, "stage=all", "steps=4", f"data.cache_dir={cache_dir}"]), run_dir)
    assert again == final
    assert before == {n: (stage_dir(run_dir, n) / "DONE").stat().st_mtime_ns for n in STAGES}


def test_comparison_report_json_and_plot(alternating_run):
    run_dir, final = alternating_run
    out = run_dir / "comparison"
    data = json.loads((out / "comparison.json").read_text())
    assert data["alternating"]["steps"] == 16 == data["end_to_end"]["steps"]
    assert data["alternating"]["mAP"] == final
    assert set(data["stages"]) == set(STAGES) and all(
        r["frozen_audit"] == "passed" for r in data["stages"].values()
    )
    text = (out / "report.md").read_text()
    for needle in (
        "| s2_fast_rcnn |",
        "**alternating total**",
        "**end_to_end total**",
        "69.9 (4-step, shared)",
        "25-50%",
    ):
        assert needle in text
    png = (out / "comparison.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_run_summary_has_custom_scalars_layout_and_config_text(alternating_run):
    from tensorboard.plugins.custom_scalar import layout_pb2, metadata

    run_dir, _ = alternating_run
    acc = EventAccumulator(str(run_dir / "summary"), size_guidance={"tensors": 0})
    acc.Reload()
    tags = acc.Tags()["tensors"]
    assert metadata.CONFIG_SUMMARY_TAG in tags and "config" in tags
    layout = layout_pb2.Layout()
    layout.ParseFromString(tf.make_ndarray(acc.Tensors(metadata.CONFIG_SUMMARY_TAG)[0].tensor_proto).item())
    charts = [c.title for cat in layout.category for c in cat.chart]
    assert (
        "Loss/total_loss: alternating vs end_to_end" in charts
        and "eval/mAP: alternating vs end_to_end" in charts
    )
    config_text = tf.make_ndarray(acc.Tensors("config")[0].tensor_proto).item().decode()
    assert "s2_fast_rcnn" in config_text and "proposals: frozen:s1_rpn" in config_text


def test_exported_saved_model_matches_the_checkpoints_own_postprocess(alternating_run):
    from orchestrator.odapi import fields, tf_example_decoder

    run_dir, _ = alternating_run
    detect = tf.saved_model.load(str(run_dir / "export" / "alternating" / "saved_model"))
    stage = stage_dir(run_dir, "s4_detector_head")
    configs = builder.load_configs(stage / "pipeline.config")
    record = configs["eval_input_configs"][0].tf_record_input_reader.input_path[0]
    decoded = tf_example_decoder.TfExampleDecoder().decode(next(iter(tf.data.TFRecordDataset(record))))
    image = decoded[fields.InputDataFields.image][None]
    exported = detect(image)
    model = builder.build_model(configs, is_training=False)
    tf.train.Checkpoint(model=model).read(
        tf.train.latest_checkpoint(str(stage / "checkpoints"))
    ).expect_partial()
    images, shapes = model.preprocess(tf.cast(image, tf.float32))
    own = model.postprocess(model.predict(images, shapes), shapes)
    n = int(own["num_detections"][0])
    assert n == int(exported["num_detections"][0]) and n > 0
    np.testing.assert_allclose(exported["detection_boxes"][0, :n], own["detection_boxes"][0, :n], atol=1e-4)
    np.testing.assert_allclose(exported["detection_scores"][0, :n], own["detection_scores"][0, :n], atol=1e-4)
    np.testing.assert_array_equal(exported["detection_classes"][0, :n], own["detection_classes"][0, :n] + 1)
    assert (run_dir / "export" / "end_to_end" / "saved_model" / "saved_model.pb").exists()


def test_predict_writes_annotated_images_and_coco_results(
    alternating_run, compose_config, cache_dir, tmp_path
):
    from PIL import Image

    from orchestrator.app import run
    from orchestrator.data.shapes import ShapesParams, render_image
    from tests.conftest import FAST

    run_dir, _ = alternating_run
    rng = np.random.default_rng(5)
    for i in range(2):
        Image.fromarray(render_image(rng, ShapesParams())[0]).save(tmp_path / f"photo{i}.png")
    cfg = compose_config(
        [
            *FAST,
            "stage=predict",
            "steps=4",
            f"predict.images={tmp_path}",
            "predict.model=end_to_end",
            "predict.score_threshold=0.0",
        ]
    )
    run(cfg, run_dir)
    out = run_dir / "predict" / "end_to_end"
    assert sorted(p.name for p in out.glob("*.png")) == ["photo0.png", "photo1.png"]
    assert not np.array_equal(
        np.asarray(Image.open(out / "photo0.png")), np.asarray(Image.open(tmp_path / "photo0.png"))
    )
    detections = json.loads((out / "detections.json").read_text())
    assert detections and {"image_id", "category_id", "bbox", "score"} <= set(detections[0])
    assert {d["image_id"] for d in detections} <= {"photo0.png", "photo1.png"}
