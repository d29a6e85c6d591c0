"""Load an exported SavedModel on this stack, run it on the first image of a TFRecord, save detections.

PYTHONPATH=. PY scripts/xstack/savedmodel_check.py RUN/export/alternating/saved_model VAL.record OUT.npz
"""

import io
import sys

import numpy as np
from PIL import Image

from orchestrator import odapi  # noqa: F401  (before TensorFlow: TF_USE_LEGACY_KERAS, compat)


def main(saved_model: str, record: str, out: str) -> None:
    import tensorflow as tf
    from tensorflow.core.example import example_pb2

    example = example_pb2.Example.FromString(next(iter(tf.data.TFRecordDataset(record))).numpy())
    encoded = example.features.feature["image/encoded"].bytes_list.value[0]
    image = np.asarray(Image.open(io.BytesIO(encoded)).convert("RGB"))
    det = tf.saved_model.load(saved_model)(tf.constant(image[None], dtype=tf.uint8))
    arrays = {k: det[f"detection_{k}"].numpy() for k in ("boxes", "scores", "classes")}
    np.savez(out, num=det["num_detections"].numpy(), **arrays)
    print(tf.__version__, "loaded", saved_model, "num_detections", det["num_detections"].numpy())


if __name__ == "__main__":
    main(*sys.argv[1:4])
