"""One calling convention for an exported detector, whatever runs it (TensorFlow or ONNX Runtime).

``stage=predict``, the ONNX parity check and the latency benchmark all call a :data:`Detector`:
a uint8 RGB image [H, W, 3] in, its :class:`Detections` out, so what they compare or draw does not
depend on the runtime. Both runtimes see the OD API exporter's ``image_tensor`` signature: uint8
[1, H, W, 3] in, ``detection_boxes`` (normalised ymin, xmin, ymax, xmax), ``detection_classes``
(label-map ids), ``detection_scores`` and ``num_detections`` out.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from stages.errors import UserError
from stages.spec import Runtime


@dataclass(frozen=True)
class Detections:
    boxes: np.ndarray  # [n, 4] float, normalised (ymin, xmin, ymax, xmax)
    classes: np.ndarray  # [n] int, label-map ids (1-based)
    scores: np.ndarray  # [n] float, descending
    capacity: int = 0  # the exporter's max detections (the padded output length); 0: unknown

    def full(self) -> bool:
        """Every slot used: detections may have been cut at the last (lowest) score."""
        return self.capacity > 0 and len(self.scores) >= self.capacity


Detector = Callable[[np.ndarray], Detections]


def _detections(boxes, classes, scores, num) -> Detections:
    n = int(np.asarray(num).reshape(-1)[0])
    return Detections(
        boxes=np.asarray(boxes)[0, :n].astype(np.float32),
        classes=np.asarray(classes)[0, :n].astype(np.int64),
        scores=np.asarray(scores)[0, :n].astype(np.float32),
        capacity=int(np.asarray(scores).shape[1]),
    )


def saved_model_detector(path: Path) -> Detector:
    import tensorflow as tf

    detect = tf.saved_model.load(str(path))

    def run(image: np.ndarray) -> Detections:
        out = detect(tf.constant(image[None], dtype=tf.uint8))
        return _detections(*(out[k].numpy() for k in OUTPUTS))

    return run


OUTPUTS = ("detection_boxes", "detection_classes", "detection_scores", "num_detections")


class OnnxRuntimeMissing(UserError):
    pass


def onnx_detector(path: Path) -> Detector:
    """ONNX Runtime on the CPU (the parity reference the README's TensorRT step starts from)."""
    try:
        import onnxruntime
    except ImportError as exc:
        raise OnnxRuntimeMissing(
            f"predict.runtime=onnx needs onnxruntime ({exc}); rerun bash scripts/setup.sh"
        ) from None
    session = onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (image_input,) = session.get_inputs()

    def run(image: np.ndarray) -> Detections:
        return _detections(*session.run(list(OUTPUTS), {image_input.name: image[None].astype(np.uint8)}))

    return run


def load_detector(path: Path, runtime: Runtime) -> Detector:
    return onnx_detector(path) if runtime == Runtime.onnx else saved_model_detector(path)


def record_images(records: str, limit: int | None) -> Iterator[tuple[str, np.ndarray]]:
    """(name, uint8 image) of the first ``limit`` examples of TFRecords (a file or a glob)."""
    import tensorflow as tf

    from orchestrator.odapi import fields, tf_example_decoder

    decoder = tf_example_decoder.TfExampleDecoder()
    files = sorted(tf.io.gfile.glob(records))
    for i, serialized in enumerate(tf.data.TFRecordDataset(files)):
        if limit is not None and i >= limit:
            return
        decoded = decoder.decode(serialized)
        name = decoded[fields.InputDataFields.source_id].numpy().decode() or f"record {i}"
        yield name, decoded[fields.InputDataFields.image].numpy()
