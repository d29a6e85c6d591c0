"""Run-level TensorBoard extras: a custom-scalars layout and the resolved config as text.

Each stage already writes ``<stage>/train`` and ``<stage>/eval`` with steps offset so the four
alternating stages line up one after another on ``end_to_end``'s step axis.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as cs_summary

CHARTS = {
    "loss": ["Loss/total_loss", "Loss/RPNLoss/objectness_loss", "Loss/BoxClassifierLoss/classification_loss"],
    "evaluation": ["eval/mAP$", "eval/mAP@0.5", "eval/AR@100"],
}


def layout() -> layout_pb2.Layout:
    categories = []
    for title, tags in CHARTS.items():
        charts = [
            layout_pb2.Chart(
                title=f"{tag.rstrip('$')}: alternating vs end_to_end",
                multiline=layout_pb2.MultilineChartContent(tag=[tag]),
            )
            for tag in tags
        ]
        categories.append(layout_pb2.Category(title=title, chart=charts))
    return layout_pb2.Layout(category=categories)


def write_run_summaries(run_dir: Path, resolved_config: str) -> None:
    """Layout + config text in ``<run>/summary`` (written once per invocation)."""
    writer = tf.summary.create_file_writer(str(run_dir / "summary"))
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(cs_summary.pb(layout()).SerializeToString(), step=0)
        tf.summary.text("config", f"```\n{resolved_config}\n```", step=0)
    writer.flush()
