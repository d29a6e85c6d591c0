"""On this stack: build a stage's model from its pipeline.config, restore every group from a
checkpoint (possibly written by the other stack) strictly, per group, as stages do; run it on the
first eval batch and save the raw RPN outputs and the detections.

    PYTHONPATH=. PY scripts/xstack/restore_predict.py STAGE_DIR/pipeline.config CKPT_PREFIX OUT.npz
"""

import sys

import numpy as np

from orchestrator import odapi  # noqa: F401  (before TensorFlow: TF_USE_LEGACY_KERAS, compat)


def main(pipeline: str, checkpoint: str, out: str) -> None:
    import tensorflow as tf

    from orchestrator.odapi import builder, fields, restore
    from stages.groups import resolve_groups

    configs = builder.load_configs(pipeline)
    model = builder.build_model(configs, is_training=False)
    features, labels = next(iter(builder.eval_dataset(configs, model)))
    builder.ensure_built(model, features, labels)
    groups = resolve_groups(model)
    sources = {g: restore.Source("xstack", checkpoint) for g in groups.modules}
    for group, text in restore.initialize(model, groups, sources).items():
        print(f"restored {group}: {text}")
    images = features[fields.InputDataFields.image]
    shapes = features[fields.InputDataFields.true_image_shape]
    pred = model.predict(images, shapes)
    dets = model.postprocess(pred, shapes)
    np.savez(
        out,
        rpn_box_encodings=pred["rpn_box_encodings"].numpy(),
        rpn_objectness=pred["rpn_objectness_predictions_with_background"].numpy(),
        image=images.numpy(),
        boxes=dets["detection_boxes"].numpy(),
        scores=dets["detection_scores"].numpy(),
        classes=dets["detection_classes"].numpy(),
        num=dets["num_detections"].numpy(),
    )
    print(tf.__version__, "wrote", out, "num_detections", dets["num_detections"].numpy())


if __name__ == "__main__":
    main(*sys.argv[1:4])
