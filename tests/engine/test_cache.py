"""Stages 2-4 on cached frozen outputs train exactly as on live ones (real tiny stages)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf

from orchestrator.engine import cache as cache_lib
from orchestrator.engine import cache_input, cache_keys, cache_store, evaluate
from orchestrator.engine.runner import Proposer, build_frozen_proposer
from orchestrator.engine.step import compute_losses
from orchestrator.layout import StageFiles
from orchestrator.odapi import builder, fields, proposals
from stages.cache import FEATURES, PROPOSALS, CacheDecision
from stages.groups import resolve_groups

pytestmark = pytest.mark.slow
TRAINS = {"s3_rpn_shared": ("rpn",), "s4_detector_head": ("detector_features", "detector_head")}
MEMORY = cache_store.Budget(memory_mb=2048)


def _stage(run_dir, name: str) -> StageFiles:
    return StageFiles(run_dir / "alternating" / name)


def _model(files: StageFiles):
    """The stage's model at its final checkpoint, and its training input."""
    configs = builder.load_configs(files.pipeline)
    tf.keras.backend.clear_session()
    model = builder.build_model(configs, is_training=True)
    data = iter(builder.train_dataset(configs, model))
    first = next(data)
    builder.ensure_built(model, *first)
    tf.train.Checkpoint(model=model).restore(
        str(files.directory / files.read_done().checkpoint)
    ).expect_partial()
    return model, configs, data, first


@pytest.fixture(scope="module")
def stage_two(alternating_run, tmp_path_factory):
    """Stage 2's detector, its frozen proposer, and the proposals cache."""
    run_dir, _ = alternating_run
    s1, s2 = _stage(run_dir, "s1_rpn"), _stage(run_dir, "s2_fast_rcnn")
    detector, configs, data, first = _model(s2)
    proposer = Proposer("s1_rpn", s2.proposer, str(s1.directory / s1.read_done().checkpoint))
    proposer_model, _ = build_frozen_proposer(proposer, *first)
    outputs = cache_lib.producer_outputs(proposer_model, (PROPOSALS,))
    directory = tmp_path_factory.mktemp("caches") / "s2"
    cached = cache_lib.build_cache(
        "s2_fast_rcnn", detector, lambda: outputs, configs, (False, True), MEMORY, directory
    )
    return detector, proposer_model, cached, data


@pytest.fixture(scope="module", params=["s3_rpn_shared", "s4_detector_head"])
def frozen_own(request, alternating_run, tmp_path_factory):
    """Stage 3 or 4: its model, frozen as the stage trains it, and the cache of its frozen parts."""
    run_dir, _ = alternating_run
    name = request.param
    model, configs, data, _ = _model(_stage(run_dir, name))
    resolve_groups(model).set_trainable(TRAINS[name])
    parts = (FEATURES,) if name == "s3_rpn_shared" else (FEATURES, PROPOSALS)
    outputs, directory = cache_lib.producer_outputs(model, parts), tmp_path_factory.mktemp("caches") / name
    cached = cache_lib.build_cache(name, model, lambda: outputs, configs, (False, True), MEMORY, directory)
    return name, model, cached, data


def test_the_cache_holds_every_training_image_in_both_flips(stage_two, alternating_run):
    _, _, cached, _ = stage_two
    images = _train_images(alternating_run[0])
    assert len(cached.keys) == 2 * images == len(np.unique(cached.keys))
    assert (
        cached.arrays["proposals/boxes"].shape == (2 * images, 100, 4)
        and (cached.arrays["proposals/num"] > 0).all()
    )


def test_cached_proposals_equal_the_live_proposers_on_shuffled_flipped_batches(stage_two):
    _, proposer, cached, data = stage_two
    lookup = cache_lib.CacheLookup(cached)
    for _ in range(3):  # 12 images drawn with random flips: both flip states, but for 2^-11
        features, _ = next(data)
        images = features[fields.InputDataFields.image]
        shapes = features[fields.InputDataFields.true_image_shape]
        live = proposals.first_stage_nms(
            proposer, proposals.proposer_first_stage(proposer, images), images, shapes
        )
        got = lookup(images)
        for name, want in zip(("boxes", "scores", "num"), live, strict=True):
            np.testing.assert_allclose(got[f"proposals/{name}"].numpy(), want.numpy(), rtol=1e-5, atol=1e-4)


def test_a_batch_on_cached_proposals_has_the_live_losses_and_gradients(stage_two):
    detector, proposer, cached, data = stage_two
    features, labels = next(data)
    live = _losses_and_gradients(
        detector, proposals.frozen_proposer_predict(detector, proposer), features, labels
    )
    cached_fn = proposals.cached_predict(detector, cache_lib.CacheLookup(cached), first_stage_only=False)
    _assert_same(live, _losses_and_gradients(detector, cached_fn, features, labels), "BoxClassifierLoss")


def test_cached_shared_features_equal_the_live_ones(frozen_own):
    _, model, cached, data = frozen_own
    lookup = cache_lib.CacheLookup(cached)
    features, _ = next(data)
    images = features[fields.InputDataFields.image]
    tf.keras.backend.set_learning_phase(True)
    (live,) = proposals.features_to_crop(model, images)
    np.testing.assert_allclose(lookup(images)["features/0"].numpy(), live.numpy(), rtol=1e-5, atol=1e-5)


def test_a_batch_on_cached_frozen_parts_has_the_live_losses_and_gradients(frozen_own):
    name, model, cached, data = frozen_own
    rpn_only = name == "s3_rpn_shared"
    features, labels = next(data)
    live_fn = proposals.rpn_only_predict(model) if rpn_only else proposals.own_predict(model)
    live = _losses_and_gradients(model, live_fn, features, labels, rpn_only)
    cached_fn = proposals.cached_predict(model, cache_lib.CacheLookup(cached), first_stage_only=rpn_only)
    replayed = _losses_and_gradients(model, cached_fn, features, labels, rpn_only)
    _assert_same(live, replayed, "RPNLoss" if rpn_only else "BoxClassifierLoss")


def test_a_batch_of_cache_rows_trains_as_the_stock_batch_of_its_images(frozen_own):
    """Stages 3 and 4 read rows, not images: each row's stored inputs are what the stock input
    gave with its image, and a step on rows (blank images) has the live losses and gradients."""
    name, model, cached, data = frozen_own
    rpn_only = name == "s3_rpn_shared"
    assert cached.replaces_images
    features, labels = next(data)
    images = features[fields.InputDataFields.image]
    position = {int(k): i for i, k in enumerate(cached.keys)}
    rows = [position[int(k)] for k in cache_keys.image_keys(images).numpy()]
    row_features, row_labels = cache_input.reader(cached)(tf.constant(rows, tf.int64))
    assert row_labels.keys() == labels.keys()
    for key, value in [*labels.items(), *features.items()]:
        if key != fields.InputDataFields.image:
            got = (row_labels if key in labels else row_features)[key]
            np.testing.assert_array_equal(got.numpy(), value.numpy(), err_msg=key)
    live_fn = proposals.rpn_only_predict(model) if rpn_only else proposals.own_predict(model)
    live = _losses_and_gradients(model, live_fn, features, labels, rpn_only)
    from_rows = proposals.cached_predict(model, None, first_stage_only=rpn_only)
    replayed = _losses_and_gradients(model, from_rows, row_features, row_labels, rpn_only)
    _assert_same(live, replayed, "RPNLoss" if rpn_only else "BoxClassifierLoss")


def test_a_flipped_row_is_its_records_row_mirrored(frozen_own):
    """Training pairs row r with row r + records as one record's two flip states."""
    _, _, cached, _ = frozen_own
    records = len(cached.keys) // 2
    boxes = cached.arrays["input/labels/groundtruth_boxes"]
    counts = cached.arrays["input/labels/num_groundtruth_boxes"]
    np.testing.assert_array_equal(counts[:records], counts[records:])
    for r in range(records):
        ymin, xmin, ymax, xmax = boxes[r, : counts[r]].T
        mirrored = np.stack([ymin, 1 - xmax, ymax, 1 - xmin], axis=-1)
        np.testing.assert_allclose(boxes[records + r, : counts[r]], mirrored, atol=1e-6)


@pytest.mark.parametrize("frozen_own", ["s3_rpn_shared"], indirect=True)
def test_cached_features_alone_serve_a_stage_whose_second_stage_runs(frozen_own):
    """Frozen shared convs, a trained RPN and the second stage on (e.g. stage 3 with a detector
    loss): cached features, the RPN and its proposals live; the losses and gradients as live."""
    _, model, cached, data = frozen_own
    features, labels = next(data)
    live = _losses_and_gradients(model, proposals.own_predict(model), features, labels)
    cached_fn = proposals.cached_predict(model, cache_lib.CacheLookup(cached), first_stage_only=False)
    _assert_same(live, _losses_and_gradients(model, cached_fn, features, labels), "RPNLoss")


def test_an_image_not_in_the_cache_stops_the_step(stage_two):
    _, _, cached, data = stage_two
    features, _ = next(data)
    lookup = cache_lib.CacheLookup(cached)
    with pytest.raises(tf.errors.InvalidArgumentError, match="not in the stage's cache"):
        lookup(features[fields.InputDataFields.image] + 1.0)


def test_a_cache_over_both_budgets_is_not_built_and_leaves_nothing(frozen_own, alternating_run, tmp_path):
    name, model, _, _ = frozen_own
    configs = builder.load_configs(_stage(alternating_run[0], name).pipeline)
    outputs = cache_lib.producer_outputs(model, (FEATURES,))
    budget = cache_store.Budget(memory_mb=1, disk_mb=1)
    with pytest.raises(cache_store.TooLarge, match=r"MiB > cache.memory_mb=1 and cache.disk_mb=1$"):
        cache_lib.build_cache(name, model, lambda: outputs, configs, (False, True), budget, tmp_path / "c")
    assert list(tmp_path.iterdir()) == []


def test_a_cache_over_the_memory_budget_is_read_from_disk_with_the_same_values(
    stage_two, alternating_run, tmp_path
):
    detector, proposer, in_memory, data = stage_two
    directory = tmp_path / "s2"
    on_disk = _rebuild(stage_two, alternating_run[0], cache_store.Budget(memory_mb=0, disk_mb=100), directory)
    assert on_disk.place == "disk" and (directory / "meta.json").exists()
    features, _ = next(data)
    images = features[fields.InputDataFields.image]
    want = cache_lib.CacheLookup(in_memory)(images)

    @tf.function
    def read(images):  # inside a compiled step, as training reads it
        out = cache_lib.CacheLookup(on_disk)(images)
        traced.update({name: value.shape for name, value in out.items()})
        return out

    traced = {}
    got = read(images)
    for name in want:
        np.testing.assert_array_equal(got[name].numpy(), want[name].numpy())
        assert traced[name] == want[name].shape  # static, batch included: the OD API unstacks it


def test_a_complete_cache_is_reused_and_a_dead_builds_partial_one_removed(
    stage_two, alternating_run, tmp_path
):
    directory = tmp_path / "s2"
    stale = tmp_path / f"s2.partial-{cache_store._HOST}-999999999"  # a killed build's (no such process)
    stale.mkdir()
    built = _rebuild(stage_two, alternating_run[0], MEMORY, directory)
    assert not built.reused and not stale.exists()
    again = _rebuild(stage_two, alternating_run[0], MEMORY, directory)
    assert again.reused and again.build_cpu_seconds < built.build_cpu_seconds / 5
    np.testing.assert_array_equal(again.keys, built.keys)
    np.testing.assert_array_equal(again.arrays["proposals/boxes"], built.arrays["proposals/boxes"])


def test_float16_halves_cached_features_and_stays_close(frozen_own, alternating_run, tmp_path):
    name, model, full, data = frozen_own
    configs = builder.load_configs(_stage(alternating_run[0], name).pipeline)
    outputs = cache_lib.producer_outputs(model, (FEATURES,))
    budget = cache_store.Budget(memory_mb=2048, float16=True)
    half = cache_lib.build_cache(
        name, model, lambda: outputs, configs, (False, True), budget, tmp_path / name
    )
    assert half.arrays["features/0"].dtype == np.float16
    assert half.arrays["features/0"].nbytes * 2 == full.arrays["features/0"].nbytes
    features, _ = next(data)
    images = features[fields.InputDataFields.image]
    got = cache_lib.CacheLookup(half)(images)["features/0"]
    want = cache_lib.CacheLookup(full)(images)["features/0"].numpy()
    assert got.dtype == tf.float32
    np.testing.assert_allclose(got.numpy(), want, rtol=2e-3, atol=2e-3 * np.abs(want).max())


def test_force_gives_each_image_the_entry_of_its_record_and_in_step_flip(alternating_run, tmp_path):
    """cache.mode=force with a colour step that changes nothing: the entry each training image
    reads by (record, flip drawn in the step) must be that very image's frozen features."""
    name = "s3_rpn_shared"
    model, configs, _, _ = _model(_stage(alternating_run[0], name))
    resolve_groups(model).set_trainable(TRAINS[name])
    configs["train_config"].data_augmentation_options.add().random_rgb_to_gray.probability = 0.0
    outputs = cache_lib.producer_outputs(model, (FEATURES,))
    cached = cache_lib.build_cache(
        name, model, lambda: outputs, configs, (False, True), MEMORY, tmp_path / name, True
    )
    decision = CacheDecision(name, True, "", (FEATURES,), (False, True), ("random_rgb_to_gray",))
    data_configs, transform = cache_keys.training_input(decision, configs)
    assert [
        s.WhichOneof("preprocessing_step") for s in data_configs["train_config"].data_augmentation_options
    ] == ["random_rgb_to_gray"]  # the flip moved into the step
    data = iter(builder.train_dataset(data_configs, model).map(transform))
    lookup, flips = cache_lib.CacheLookup(cached), set()
    tf.keras.backend.set_learning_phase(True)
    for _ in range(3):
        features, _ = next(data)
        images, keys = features[fields.InputDataFields.image], features[cache_keys.CACHE_KEY]
        flips |= set((keys.numpy() % 2).tolist())
        (live,) = proposals.features_to_crop(model, images)
        got = lookup(images, keys)["features/0"].numpy()
        np.testing.assert_allclose(got, live.numpy(), rtol=1e-5, atol=1e-5)
    assert flips == {0, 1}


def test_stage_two_evaluates_on_its_cached_val_proposals_as_on_its_live_proposer(
    stage_two, alternating_run, tmp_path
):
    run_dir, _ = alternating_run
    s1, s2 = _stage(run_dir, "s1_rpn"), _stage(run_dir, "s2_fast_rcnn")
    detector, proposer, _, _ = stage_two
    configs = builder.load_configs(s2.pipeline)
    val = cache_lib.build_val_proposals("s2_fast_rcnn", lambda: proposer, detector, configs, tmp_path / "val")
    images = len(list(tf.data.TFRecordDataset(cache_keys.record_files(configs["eval_input_configs"][0]))))
    assert len(np.unique(val.keys)) == images and val.arrays["proposals/boxes"].shape == (images, 300, 4)
    assert val.place == "memory" and not val.reused
    checkpoint = str(s2.directory / s2.read_done().checkpoint)
    live_proposer = (s2.proposer, str(s1.directory / s1.read_done().checkpoint))
    live = evaluate.Evaluator(s2.pipeline, detector=True, proposer=live_proposer)
    cached = evaluate.Evaluator(
        s2.pipeline, detector=True, proposer=live_proposer, val_proposals=evaluate.ValProposals(val)
    )
    for evaluator in (live, cached):
        tf.train.Checkpoint(model=evaluator.model).restore(checkpoint).expect_partial()
    for features, _ in live.dataset:  # every val image: same proposals, same detections
        args = (features[fields.InputDataFields.image], features[fields.InputDataFields.true_image_shape])
        (want_boxes, want_n, want), (got_boxes, got_n, got) = live._infer(*args), cached._infer(*args)
        assert int(got_n[0]) == int(want_n[0]) > 0
        np.testing.assert_allclose(got_boxes.numpy(), want_boxes.numpy(), atol=1e-5)
        for key in ("detection_boxes", "detection_scores", "num_detections"):
            np.testing.assert_allclose(got[key].numpy(), want[key].numpy(), rtol=1e-4, atol=1e-5, err_msg=key)
    metrics = cached(checkpoint)
    assert metrics["eval_proposals"] == "cached" and live(checkpoint)["eval_proposals"] == "proposer"
    reused = cache_lib.build_val_proposals("s2_fast_rcnn", _no_proposer, detector, configs, tmp_path / "val")
    assert reused.reused and np.array_equal(reused.arrays["proposals/boxes"], val.arrays["proposals/boxes"])


def _no_proposer():
    raise AssertionError("a complete val cache is reused without building a proposer")


def _rebuild(stage_two, run_dir, budget, directory):
    """Stage 2's proposals cache built (or reused) in ``directory`` under ``budget``."""
    detector, proposer, _, _ = stage_two
    configs = builder.load_configs(_stage(run_dir, "s2_fast_rcnn").pipeline)
    outputs = cache_lib.producer_outputs(proposer, (PROPOSALS,))
    return cache_lib.build_cache(
        "s2_fast_rcnn", detector, lambda: outputs, configs, (False, True), budget, directory
    )


@pytest.mark.parametrize(
    ("name", "parts"),
    [
        ("s2_fast_rcnn", ["proposals"]),
        ("s3_rpn_shared", ["features"]),
        ("s4_detector_head", ["features", "proposals"]),
    ],
)
def test_the_chains_frozen_stages_trained_on_their_caches(alternating_run, name, parts):
    run_dir, _ = alternating_run
    metrics = json.loads((_stage(run_dir, name).metrics).read_text())
    assert metrics["cache"]["parts"] == parts and metrics["cache"]["place"] == "memory"
    assert not metrics["cache"]["reused"] and not Path(metrics["cache"]["directory"]).exists()  # not kept
    assert metrics["cache"]["entries"] == 2 * _train_images(run_dir)
    assert metrics["cache"]["input"] == ("images" if name == "s2_fast_rcnn" else "cached rows")
    assert metrics["frozen_audit"]["passed"]
    assert ("proposer_audit" in metrics) == (name == "s2_fast_rcnn")  # built its cache: audited
    if name == "s2_fast_rcnn":  # its evaluation replayed the val proposals built with its cache
        assert metrics["eval"]["eval_proposals"] == "cached"
        assert not Path(metrics["cache"]["val_proposals"]["directory"]).exists()
    assert metrics.get("proposer_audit", {"passed": True})["passed"]
    assert metrics["train_cpu_seconds"] >= metrics["cache"]["build_cpu_seconds"] > 0


def _losses_and_gradients(
    model, predict, features, labels, first_stage_only: bool = False
) -> tuple[dict, list]:
    """Eagerly, from the same random seed: the k-th random op (minibatch sampling) draws alike."""
    tf.random.set_seed(7)
    tf.keras.backend.set_learning_phase(True)
    with tf.GradientTape() as tape:
        losses = compute_losses(model, predict, features, labels, first_stage_only=first_stage_only)
    gradients = tape.gradient(losses["Loss/total_loss"], model.trainable_variables)
    return (
        {k: float(v) for k, v in losses.items()},
        [None if g is None else tf.convert_to_tensor(g).numpy() for g in gradients],
    )


def _assert_same(live: tuple, replayed: tuple, trained_loss: str) -> None:
    assert live[0].keys() == replayed[0].keys()
    assert any(trained_loss in k and v > 0 for k, v in live[0].items())
    for key, value in live[0].items():
        np.testing.assert_allclose(replayed[0][key], value, rtol=1e-5, atol=1e-6, err_msg=key)
    trained = [i for i, g in enumerate(live[1]) if g is not None]
    assert trained and [i for i, g in enumerate(replayed[1]) if g is not None] == trained
    for i in trained:  # proposals from the compiled build pass differ from eager ones by ~1e-5 px:
        # measured up to 8.8e-5 on gradients of size 0.06, so the bound scales with the gradient
        scale = float(np.abs(live[1][i]).max())
        np.testing.assert_allclose(replayed[1][i], live[1][i], rtol=1e-4, atol=max(1e-6, 2e-3 * scale))


def _train_images(run_dir) -> int:
    configs = builder.load_configs(_stage(run_dir, "s2_fast_rcnn").pipeline)
    return len(
        list(tf.data.TFRecordDataset(list(configs["train_input_config"].tf_record_input_reader.input_path)))
    )
