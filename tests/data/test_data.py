"""Bring your own data: validation faults, COCO / VOC conversion, tfrecord globs."""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tensorflow as tf
from PIL import Image

from orchestrator.data.resolve import resolve_data
from orchestrator.data.shapes import CLASS_NAMES, ShapesParams, render_image
from orchestrator.data.tfrecords import Box, encode_example, write_label_map, write_records
from orchestrator.data.validate import DataValidationError, validate_split
from stages.spec import DataConfig

ROOT = Path(__file__).resolve().parents[2]


def good_examples(n: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [encode_example(*render_image(rng, ShapesParams()), CLASS_NAMES, key=f"g{i}") for i in range(n)]


def bad_example(box: Box):
    image, _ = render_image(np.random.default_rng(9), ShapesParams())
    example = encode_example(image, [Box(1, box.ymin, box.xmin, box.ymax, box.xmax)], CLASS_NAMES, key="bad")
    example.features.feature["image/object/class/label"].int64_list.value[0] = box.class_id
    return example


def dataset(tmp: Path, train: list, val: list | None = None, policy: str = "error") -> DataConfig:
    tmp.mkdir(parents=True, exist_ok=True)
    write_records(tmp / "train.record", iter(train))
    write_records(tmp / "val.record", iter(good_examples(2) if val is None else val))
    write_label_map(tmp / "label_map.pbtxt", CLASS_NAMES)
    return DataConfig(kind="tfrecord", train=str(tmp / "train.record"), val=str(tmp / "val.record"),
                      label_map=str(tmp / "label_map.pbtxt"), cache_dir=str(tmp / "cache"), bad_boxes=policy)  # fmt: skip


@pytest.mark.parametrize(
    "box, message",
    [
        (Box(1, 0.8, 0.1, 0.2, 0.5), "train.record #1: box ymin=0.8 >= ymax=0.2"),
        (Box(1, 0.1, 0.1, 0.5, 1.3), "train.record #1: box xmax=1.3 outside [0, 1]"),
        (Box(2, math.nan, 0.1, 0.5, 0.5), "train.record #1: box {'ymin': nan"),
        (Box(7, 0.1, 0.1, 0.5, 0.5), "train.record #1: class id 7 is not in the label map (ids [1, 2, 3])"),
    ],
)
def test_each_bad_box_is_named_with_file_and_record(tmp_path, box, message):
    cfg = dataset(tmp_path, [*good_examples(1), bad_example(box), *good_examples(1)])
    with pytest.raises(DataValidationError) as info:
        resolve_data(cfg, seed=0)
    assert message in str(info.value)


def test_undecodable_image_empty_split_and_corrupt_file(tmp_path):
    broken = good_examples(1)[0]
    broken.features.feature["image/encoded"].bytes_list.value[0] = b"not a png"
    with pytest.raises(DataValidationError, match=r"train.record #0: cannot decode"):
        resolve_data(dataset(tmp_path / "a", [broken]), seed=0)
    with pytest.raises(DataValidationError, match=r"val split .*val.record: no records"):
        resolve_data(dataset(tmp_path / "b", good_examples(1), val=[]), seed=0)
    cfg = dataset(tmp_path / "c", good_examples(3))
    data = Path(cfg.train).read_bytes()
    Path(cfg.train).write_bytes(data[: len(data) - 50])
    with pytest.raises(DataValidationError, match=r"train.record: corrupt TFRecord file"):
        resolve_data(cfg, seed=0)


def test_skip_and_clip_write_a_cleaned_copy_with_counts(tmp_path):
    bad = [bad_example(Box(1, 0.1, 0.1, 0.5, 1.3)), bad_example(Box(1, 0.8, 0.1, 0.2, 0.5))]
    skipped = resolve_data(dataset(tmp_path / "s", [*good_examples(2), *bad], policy="skip"), seed=0)
    clipped = resolve_data(dataset(tmp_path / "c", [*good_examples(2), *bad], policy="clip"), seed=0)
    for files, expected_boxes in ((skipped, 0), (clipped, 1)):
        assert "cleaned-" in files.train
        last_two = list(tf.data.TFRecordDataset(files.train).as_numpy_iterator())[-2:]
        counts = [
            len(tf.train.Example.FromString(r).features.feature["image/object/bbox/xmax"].float_list.value)
            for r in last_two
        ]
        assert sum(counts) == expected_boxes
    clipped_box = tf.train.Example.FromString(
        list(tf.data.TFRecordDataset(clipped.train).as_numpy_iterator())[-2]
    )
    assert clipped_box.features.feature["image/object/bbox/xmax"].float_list.value[0] == 1.0


def test_tfrecord_globs_validate_every_shard(tmp_path):
    for i in range(2):
        write_records(tmp_path / f"train-{i}.record", iter(good_examples(2 + i, seed=i)))
    cfg = dataset(tmp_path, good_examples(1))
    cfg.train = str(tmp_path / "train-*.record")
    assert resolve_data(cfg, seed=0).train.endswith("train-*.record")
    report = validate_split(cfg.train, {1, 2, 3}, "error", "train", tmp_path / "cache", "k")
    assert report.records == 5  # 2 + 3: both shards were read
    write_records(
        tmp_path / "train-1.record", iter([*good_examples(1), bad_example(Box(1, 0.8, 0.1, 0.2, 0.5))])
    )
    with pytest.raises(DataValidationError, match=r"train-1.record #1: box ymin=0.8 >= ymax=0.2"):
        validate_split(cfg.train, {1, 2, 3}, "error", "train", tmp_path / "cache", "k")


def test_val_split_without_boxes_is_refused(tmp_path):
    empty = good_examples(2)
    for example in empty:
        for key in ("ymin", "xmin", "ymax", "xmax"):
            del example.features.feature[f"image/object/bbox/{key}"].float_list.value[:]
        del example.features.feature["image/object/class/label"].int64_list.value[:]
        del example.features.feature["image/object/class/text"].bytes_list.value[:]
    cfg = dataset(tmp_path, good_examples(1), val=empty)
    with pytest.raises(DataValidationError) as info:
        resolve_data(cfg, seed=0)
    assert str(info.value) == (
        f"val split {cfg.val} has no boxes: mAP cannot be computed; add annotated images to it"
    )
    cfg = dataset(
        tmp_path / "skip", good_examples(1), val=[bad_example(Box(1, 0.8, 0.1, 0.2, 0.5))], policy="skip"
    )
    with pytest.raises(
        DataValidationError, match=r"val.record has no boxes \(data.bad_boxes=skip dropped all 1\)"
    ):
        resolve_data(cfg, seed=0)


@pytest.mark.slow  # a CLI process that imports TensorFlow to read the records (~8 s)
def test_bad_data_stops_the_cli_before_any_stage(tmp_path):
    cfg = dataset(tmp_path, [bad_example(Box(1, 0.8, 0.1, 0.2, 0.5))])
    run_dir = tmp_path / "run"
    args = ["stage=all", "data=tfrecord", f"data.train={cfg.train}", f"data.val={cfg.val}", f"data.label_map={cfg.label_map}",
            f"data.cache_dir={cfg.cache_dir}", f"hydra.run.dir={run_dir}"]  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "orchestrator", *args], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 2
    assert "train.record #0: box ymin=0.8 >= ymax=0.2" in result.stderr + result.stdout
    assert not (run_dir / "alternating").exists() and not (run_dir / "end_to_end").exists()


# --- COCO and VOC fixtures ----------------------------------------------------------------


def _images(folder: Path, n: int, seed: int, suffix: str) -> list[tuple[str, list[Box]]]:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    out = []
    for i in range(n):
        image, boxes = render_image(rng, ShapesParams())
        name = f"img{seed}_{i}{suffix}"
        Image.fromarray(image).save(folder / name)
        out.append((name, boxes))
    return out


def write_coco(tmp: Path) -> list[str]:
    args = []
    for split, seed in (("train", 1), ("val", 2)):
        images = _images(tmp / split, 6, seed, ".png")
        anns, next_id = [], 1
        for image_id, (_, boxes) in enumerate(images):
            for b in boxes:
                x, y, w, h = b.xmin * 128, b.ymin * 128, (b.xmax - b.xmin) * 128, (b.ymax - b.ymin) * 128
                anns.append(
                    {
                        "id": next_id,
                        "image_id": image_id,
                        "category_id": 10 * b.class_id,
                        "bbox": [x, y, w, h],
                        "iscrowd": 0,
                        "area": w * h,
                    }
                )
                next_id += 1
        data = {
            "images": [
                {"id": i, "file_name": n, "width": 128, "height": 128} for i, (n, _) in enumerate(images)
            ],
            "annotations": anns,
            "categories": [{"id": 10 * (i + 1), "name": n} for i, n in enumerate(CLASS_NAMES)],
        }
        (tmp / f"{split}.json").write_text(json.dumps(data))
        args += [f"data.{split}={tmp / f'{split}.json'}", f"data.{split}_images={tmp / split}"]
    return ["data=coco", *args]


def write_voc(tmp: Path) -> list[str]:
    root = tmp / "VOC2007"
    (root / "Annotations").mkdir(parents=True)
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for split, seed in (("train", 1), ("val", 2)):
        images = _images(root / "JPEGImages", 6, seed, ".jpg")
        for name, boxes in images:
            objects = "".join(
                f"<object><name>{CLASS_NAMES[b.class_id - 1]}</name><bndbox><xmin>{b.xmin * 128:.0f}</xmin><ymin>{b.ymin * 128:.0f}</ymin>"
                f"<xmax>{b.xmax * 128:.0f}</xmax><ymax>{b.ymax * 128:.0f}</ymax></bndbox></object>"
                for b in boxes
            )
            xml = f"<annotation><filename>{name}</filename><size><width>128</width><height>128</height><depth>3</depth></size>{objects}</annotation>"
            (root / "Annotations" / f"{Path(name).stem}.xml").write_text(xml)
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("\n".join(Path(n).stem for n, _ in images))
    return ["data=voc", f"data.root={root}"]


def test_coco_annotation_with_degenerate_box_is_named(tmp_path):
    write_coco(tmp_path)
    data = json.loads((tmp_path / "train.json").read_text())
    data["annotations"][2]["bbox"][2] = 0
    (tmp_path / "train.json").write_text(json.dumps(data))
    cfg = DataConfig(kind="coco", train=str(tmp_path / "train.json"), train_images=str(tmp_path / "train"),
                     val=str(tmp_path / "val.json"), val_images=str(tmp_path / "val"), cache_dir=str(tmp_path / "cache"))  # fmt: skip
    with pytest.raises(
        DataValidationError, match="train.json annotation id 3 .*: bbox .* has width or height <= 0"
    ):
        resolve_data(cfg, seed=0)
    # checked at the source: no converted dataset, finished or temporary, was started
    assert [p.name for p in (tmp_path / "cache").iterdir() if p.name.startswith("coco-")] == []


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["coco", "voc"])
def test_coco_and_voc_convert_and_train(tmp_path, kind, cache_dir):
    from orchestrator.app import run
    from tests.conftest import FAST, compose_cfg

    data_args = write_coco(tmp_path) if kind == "coco" else write_voc(tmp_path)
    fast = [o for o in FAST if not o.startswith("data.num")]
    cfg = compose_cfg(
        [
            *fast,
            *data_args,
            "stage=end_to_end",
            "stages.end_to_end.steps=2",
            f"data.cache_dir={tmp_path / 'cache'}",
        ]
    )
    run(cfg, tmp_path / "run")
    metrics = json.loads((tmp_path / "run" / "end_to_end" / "metrics.json").read_text())
    assert metrics["steps"] == 2 and "mAP" in metrics
    label_map = next((tmp_path / "cache").glob(f"{kind}-*/label_map.pbtxt")).read_text()
    assert all(f"name: '{n}'" in label_map for n in CLASS_NAMES)
    again = next((tmp_path / "cache").glob(f"{kind}-*/train.record")).stat().st_mtime_ns
    run(cfg, tmp_path / "run2")  # cached conversion: not rewritten
    assert next((tmp_path / "cache").glob(f"{kind}-*/train.record")).stat().st_mtime_ns == again
