"""``faster_rcnn_tiny_keras``: a small Faster R-CNN feature extractor for CPU runs.

A size, not a fake: it plugs into ``FasterRCNNMetaArch`` exactly like the stock ResNet
extractor. Blocks 1-3 (3x3 conv, BatchNorm, ReLU, stride 2 each: output stride 8) feed the RPN;
block 4 runs on the cropped proposals. All four live in one ``classification_backbone``
Keras model so a ``classification`` checkpoint (``{'feature_extractor': backbone}``, the OD API's
``restore_from_objects`` format) initialises both halves, as with ResNet.
"""

from __future__ import annotations

import tensorflow as tf
from object_detection.core import freezable_batch_norm
from object_detection.meta_architectures import faster_rcnn_meta_arch
from object_detection.utils import model_util

TINY_EXTRACTOR_TYPE = "faster_rcnn_tiny_keras"
FIRST_STAGE_FILTERS = (32, 64, 128)
SECOND_STAGE_FILTERS = 64
PROPOSAL_LAYER = "block3_relu"
CLASSIFIER_LAYER = "block4_relu"


def _conv_block(x, name: str, filters: int, strides: int, training: bool | None, decay: float):
    reg = tf.keras.regularizers.l2(decay) if decay else None
    x = tf.keras.layers.Conv2D(
        filters,
        3,
        strides=strides,
        padding="same",
        use_bias=False,
        kernel_regularizer=reg,
        name=f"{name}_conv",
    )(x)
    x = freezable_batch_norm.FreezableBatchNorm(training=training, name=f"{name}_bn")(x)
    return tf.keras.layers.ReLU(name=f"{name}_relu")(x)


def build_backbone(train_batch_norm: bool, weight_decay: float = 0.0) -> tf.keras.Model:
    """The four conv blocks as one functional model (image in, block-4 features out).

    Like the OD API's ResNet: ``train_batch_norm=False`` pins BatchNorm to inference mode;
    otherwise it follows the Keras learning phase (the train step sets it, as
    ``model_lib_v2.eager_train_step`` does). Freezing a group pins its BatchNorm to inference
    mode either way (:func:`stages.groups.pin_batch_norm`).
    """
    training = None if train_batch_norm else False
    inputs = tf.keras.Input(shape=(None, None, 3), name="image")
    x = inputs
    for i, filters in enumerate(FIRST_STAGE_FILTERS, start=1):
        x = _conv_block(x, f"block{i}", filters, 2, training, weight_decay)
    x = _conv_block(x, "block4", SECOND_STAGE_FILTERS, 1, training, weight_decay)
    return tf.keras.Model(inputs, x, name="tiny_backbone")


class TinyKerasFeatureExtractor(faster_rcnn_meta_arch.FasterRCNNKerasFeatureExtractor):
    """Faster R-CNN feature extractor with a 4-block conv backbone (stride 8)."""

    def __init__(
        self,
        is_training: bool,
        first_stage_features_stride: int = 8,
        batch_norm_trainable: bool = False,
        weight_decay: float = 0.0,
    ):
        if first_stage_features_stride != 8:
            raise ValueError(
                f"faster_rcnn_tiny_keras: first_stage_features_stride must be 8, "
                f"got {first_stage_features_stride}."
            )
        super().__init__(is_training, first_stage_features_stride, batch_norm_trainable, weight_decay)
        self.classification_backbone: tf.keras.Model | None = None

    def preprocess(self, resized_inputs):
        """Scale pixels from [0, 255] to [-1, 1]."""
        return resized_inputs / 127.5 - 1.0

    def _backbone(self) -> tf.keras.Model:
        if self.classification_backbone is None:
            self.classification_backbone = build_backbone(self._train_batch_norm, self._weight_decay)
        return self.classification_backbone

    def get_proposal_feature_extractor_model(self, name=None):
        backbone = self._backbone()
        return tf.keras.Model(
            backbone.inputs, backbone.get_layer(PROPOSAL_LAYER).output, name="tiny_proposal"
        )

    def get_box_classifier_feature_extractor_model(self, name=None):
        backbone = self._backbone()
        return model_util.extract_submodel(
            model=backbone,
            inputs=backbone.get_layer(PROPOSAL_LAYER).output,
            outputs=backbone.get_layer(CLASSIFIER_LAYER).output,
            name="tiny_box_classifier",
        )
