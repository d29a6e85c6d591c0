"""Run by test_distribute.py in a fresh process: two logical CPUs, one batch, two strategies.

Prints the total loss of the first train step under the default strategy and under
MirroredStrategy (global batch split over the two devices), and the model's replica count.
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

import tensorflow as tf

cpu = tf.config.list_physical_devices("CPU")[0]
tf.config.set_logical_device_configuration(cpu, [tf.config.LogicalDeviceConfiguration()] * 2)

from orchestrator.engine import runner  # noqa: E402
from orchestrator.engine.step import make_train_step  # noqa: E402
from orchestrator.odapi import builder, proposals  # noqa: E402
from stages.spec import Strategy  # noqa: E402
from tests.helpers import tiny_pipeline  # noqa: E402


def first_step_loss(kind: Strategy, path: Path, weights: str | None, batch) -> tuple[float, int, str]:
    strategy = runner.make_strategy(kind)
    configs = builder.load_configs(path)
    with strategy.scope():
        model = builder.build_model(configs)
        builder.ensure_built(model, *batch)
        if weights:
            tf.train.Checkpoint(model=model).read(weights).expect_partial()
        else:
            weights = tf.train.Checkpoint(model=model).write(str(Path(tempfile.mkdtemp()) / "w"))
        optimizer, _ = builder.build_optimizer(configs, tf.Variable(0, dtype=tf.int64))
        step = make_train_step(
            model, optimizer, proposals.own_predict(model), False, None, strategy.num_replicas_in_sync
        )
        train_fn = runner._TrainFn(strategy, step)
        data = strategy.experimental_distribute_dataset(tf.data.Dataset.from_tensors(batch))
        losses, _ = train_fn(iter(data), 1)
    return float(losses["Loss/total_loss"]), strategy.num_replicas_in_sync, weights


tmp = Path(sys.argv[1])
config, path = tiny_pipeline(tmp)
frcnn = config.model.faster_rcnn
frcnn.first_stage_minibatch_size = 100000  # sample every anchor and proposal: no randomness
frcnn.second_stage_batch_size = frcnn.first_stage_max_proposals
frcnn.feature_extractor.batch_norm_trainable = False  # batch statistics differ per replica (no sync BN)
from stages import pipeline as pipelines  # noqa: E402

pipelines.write_pipeline(config, path)
configs = builder.load_configs(path)
batch = next(iter(builder.train_dataset(configs, builder.build_model(configs))))
single, n1, weights = first_step_loss(Strategy.default, path, None, batch)
mirrored, n2, _ = first_step_loss(Strategy.mirrored, path, weights, batch)
print("RESULT " + json.dumps({"single": single, "mirrored": mirrored, "replicas": [n1, n2]}))
