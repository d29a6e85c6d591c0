"""Backbone pre-training for ``model=tiny``: our stand-in for ImageNet (no downloads here).

The paper's stages 1, 2 and the end-to-end baseline start from a classification-pretrained
backbone. For the built-in default we train the tiny backbone to classify object crops of
the training split (plus a background class from random crops), then save it in the OD API's
``classification`` checkpoint format, ``tf.train.Checkpoint(feature_extractor=backbone)``, so
it restores exactly as an ImageNet checkpoint would. Cached by data and settings: sweep jobs
and reruns share one.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import tensorflow as tf
from tqdm import tqdm

from orchestrator.data.files import DatasetFiles
from orchestrator.data.tfrecords import cached_build
from orchestrator.layout import fingerprint
from orchestrator.odapi import fields, tf_example_decoder
from orchestrator.odapi.tiny_extractor import build_backbone

log = logging.getLogger(__name__)
CROP = 32
VERSION = 2  # 2: written with save_counter (the stock fine-tune restore asserts it)


def _crops(record: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Object crops (labels 1..N) and as many background crops (label 0), uint8."""
    decoder = tf_example_decoder.TfExampleDecoder()
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for serialized in tf.data.TFRecordDataset(record):
        decoded = decoder.decode(serialized)
        image = decoded[fields.InputDataFields.image]
        boxes = decoded[fields.InputDataFields.groundtruth_boxes].numpy()
        classes = decoded[fields.InputDataFields.groundtruth_classes].numpy()
        for box, cls in zip(boxes, classes, strict=True):
            pad = rng.uniform(0.0, 0.15, size=4) * (box[2] - box[0])
            images.append(_crop(image, box + np.array([-pad[0], -pad[1], pad[2], pad[3]])))
            labels.append(int(cls))
            y, x = rng.uniform(0, 0.8, size=2)
            images.append(_crop(image, np.array([y, x, y + 0.2, x + 0.2])))
            labels.append(0)
    return np.stack(images), np.array(labels)


def _crop(image: tf.Tensor, box: np.ndarray) -> np.ndarray:
    box = np.clip(box, 0.0, 1.0).astype(np.float32)
    crop = tf.image.crop_and_resize(tf.cast(image[None], tf.float32), box[None], [0], [CROP, CROP])
    return crop[0].numpy().astype(np.uint8)


def pretrain_backbone(data: DatasetFiles, steps: int, seed: int, out_prefix: Path) -> str:
    """Train and save the classification backbone; returns the checkpoint path."""
    tf.keras.utils.set_random_seed(seed)
    images, labels = _crops(data.train, seed)
    backbone = build_backbone(train_batch_norm=True)
    head = tf.keras.Sequential(
        [tf.keras.layers.GlobalAveragePooling2D(), tf.keras.layers.Dense(data.num_classes + 1)]
    )
    optimizer = tf.keras.optimizers.Adam(1e-3)
    loss_fn = tf.keras.losses.SparseCategoricalCrossentropy(from_logits=True)

    @tf.function
    def step(x, y):
        x = tf.image.random_flip_left_right(tf.cast(x, tf.float32)) / 127.5 - 1.0
        with tf.GradientTape() as tape:
            logits = head(backbone(x, training=True), training=True)
            loss = loss_fn(y, logits)
        variables = backbone.trainable_variables + head.trainable_variables
        optimizer.apply_gradients(zip(tape.gradient(loss, variables), variables, strict=False))
        return loss, tf.reduce_mean(tf.cast(tf.argmax(logits, -1, output_type=tf.int32) == y, tf.float32))

    rng = np.random.default_rng(seed)
    bar = tqdm(range(steps), desc="backbone pretrain", unit="step", mininterval=2.0)
    accuracy = []
    for i in bar:
        idx = rng.integers(0, len(images), size=64)
        loss, acc = step(images[idx], labels[idx].astype(np.int32))
        accuracy.append(float(acc))
        if i % 50 == 0:
            bar.set_postfix(loss=f"{float(loss):.3f}", acc=f"{np.mean(accuracy[-50:]):.2f}", refresh=False)
    log.info("backbone pre-training: %d crops, final accuracy %.2f", len(images), np.mean(accuracy[-50:]))
    checkpoint = tf.train.Checkpoint(feature_extractor=backbone)
    # The stock fine-tune restore (model_lib_v2.load_fine_tune_checkpoint) asserts that every
    # object of its Checkpoint matched, save_counter included: create it before writing.
    checkpoint.save_counter  # noqa: B018
    return checkpoint.write(str(out_prefix))


def backbone_path(cache_dir: str, data: DatasetFiles, steps: int, seed: int) -> Path:
    key = fingerprint({"v": VERSION, "data": data.fingerprint, "steps": steps, "seed": seed})
    return Path(cache_dir).expanduser() / f"backbone-tiny-{key}" / "backbone"


def ensure_backbone(cache_dir: str, data: DatasetFiles, steps: int, seed: int) -> str:
    """The cached pre-trained backbone checkpoint, trained on first use."""
    prefix = backbone_path(cache_dir, data, steps, seed)
    built = cached_build(prefix.parent, lambda tmp: pretrain_backbone(data, steps, seed, tmp / prefix.name))
    log.info("%s backbone checkpoint %s", "Pre-trained" if built else "Using cached", prefix)
    return str(prefix)
