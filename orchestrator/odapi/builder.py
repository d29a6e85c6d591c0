"""OD API objects from a pipeline config: model, input pipeline, optimizer (stock builders).

Configuration flows one way: a generated ``pipeline.config`` (a proto) in, OD API objects out.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf

from orchestrator.odapi import config_util, fields, inputs, model_builder, model_lib, optimizer_builder


def load_configs(path: str | Path) -> dict:
    """``config_util``'s dict of protos for a pipeline.config file."""
    return config_util.get_configs_from_pipeline_file(str(path))


def build_model(configs: dict, is_training: bool = True):
    """A ``FasterRCNNMetaArch`` built by the stock ``model_builder``."""
    return model_builder.build(configs["model"], is_training=is_training)


def train_dataset(configs: dict, model, input_context=None, repeat: bool = True) -> tf.data.Dataset:
    """The stock training input (decode, augment, ``model.preprocess``, batch), repeated."""
    dataset = inputs.train_input(
        train_config=configs["train_config"],
        train_input_config=configs["train_input_config"],
        model_config=configs["model"],
        model=model,
        input_context=input_context,
    )
    return dataset.repeat() if repeat else dataset


def eval_dataset(configs: dict, model) -> tf.data.Dataset:
    """The stock evaluation input (one pass, unshuffled, batch of eval_config.batch_size)."""
    return inputs.eval_input(
        eval_config=configs["eval_config"],
        eval_input_config=configs["eval_input_configs"][0],
        model_config=configs["model"],
        model=model,
    )


def build_optimizer(configs: dict, global_step: tf.Variable):
    """(optimizer, learning-rate callable) from ``train_config.optimizer``."""
    optimizer, (learning_rate,) = optimizer_builder.build(
        configs["train_config"].optimizer, global_step=global_step
    )
    lr_fn = learning_rate if callable(learning_rate) else (lambda: learning_rate)
    return optimizer, lr_fn


def provide_groundtruth(model, labels: dict, unpad: bool = True) -> None:
    """Unstack a batch of labels and hand them to the model (``model_lib``'s own helpers)."""
    model_lib.provide_groundtruth(model, model_lib.unstack_batch(labels, unpad_groundtruth_tensors=unpad))


def ensure_built(model, features: dict, labels: dict) -> None:
    """Create every variable (both stages) by one eager forward pass on a real batch.

    Keras sub-models of the meta-architecture are created lazily; group resolution, restores
    and the checkpoint structure all need them to exist.
    """
    tf.keras.backend.set_learning_phase(False)  # as model_lib_v2: no BatchNorm updates here
    provide_groundtruth(model, labels)
    images = features[fields.InputDataFields.image]
    model.predict(images, features[fields.InputDataFields.true_image_shape])


def group_variable_names(model_config) -> dict[str, list[str]]:
    """Variable names per module group of a freshly built model (no data needed).

    Builds in inference mode and calls it on a blank image, after ``clear_session`` so Keras
    names carry no ``_1`` suffixes from models built earlier in this process.
    """
    from stages.groups import resolve_groups

    tf.keras.backend.clear_session()
    model = model_builder.build(model_config, is_training=False)
    size = _input_size(model_config)
    images, true_shapes = model.preprocess(tf.zeros([1, size, size, 3]))
    model.predict(images, true_shapes)
    groups = resolve_groups(model)
    names = {g: groups.names(g) for g in groups.variables}
    tf.keras.backend.clear_session()
    return names


def _input_size(model_config) -> int:
    resizer = model_config.faster_rcnn.image_resizer
    if resizer.HasField("fixed_shape_resizer"):
        return resizer.fixed_shape_resizer.height
    return resizer.keep_aspect_ratio_resizer.min_dimension or 128
