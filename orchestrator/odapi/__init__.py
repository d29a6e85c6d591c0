"""Gateway to the Object Detection API: patches applied, our tiny extractor registered.

Import OD API modules from here (``from orchestrator.odapi import model_builder``) so that
:func:`orchestrator.compat.apply` has run first and ``model=tiny`` resolves in
``model_builder``. Registering a class in the builder's public extractor map is the OD API's
own extension point, not a patch of its code.
"""

from __future__ import annotations

from orchestrator import compat

compat.apply()

from object_detection import eval_util, exporter_lib_v2, inputs, model_lib  # noqa: E402
from object_detection.builders import model_builder, optimizer_builder  # noqa: E402
from object_detection.core import standard_fields as fields  # noqa: E402
from object_detection.data_decoders import tf_example_decoder  # noqa: E402
from object_detection.meta_architectures import faster_rcnn_meta_arch  # noqa: E402
from object_detection.protos import pipeline_pb2  # noqa: E402
from object_detection.utils import config_util, label_map_util  # noqa: E402

from orchestrator.odapi.tiny_extractor import TINY_EXTRACTOR_TYPE, TinyKerasFeatureExtractor  # noqa: E402

model_builder.FASTER_RCNN_KERAS_FEATURE_EXTRACTOR_CLASS_MAP[TINY_EXTRACTOR_TYPE] = TinyKerasFeatureExtractor

__all__ = [
    "config_util",
    "eval_util",
    "exporter_lib_v2",
    "faster_rcnn_meta_arch",
    "fields",
    "inputs",
    "label_map_util",
    "model_builder",
    "model_lib",
    "optimizer_builder",
    "pipeline_pb2",
    "tf_example_decoder",
]
