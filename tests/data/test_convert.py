"""COCO / VOC checked at the source: every error names the user's file and item and the fix."""

from __future__ import annotations

import io
import json
import re
from pathlib import Path

import pytest
import tensorflow as tf
from PIL import Image

from orchestrator.data.resolve import resolve_data
from orchestrator.data.validate import DataValidationError, sources_path
from stages.spec import DataConfig
from tests.data.test_data import write_coco, write_voc


def coco_cfg(tmp: Path, policy: str = "error") -> DataConfig:
    return DataConfig(kind="coco", train=str(tmp / "train.json"), train_images=str(tmp / "train"),
                      val=str(tmp / "val.json"), val_images=str(tmp / "val"), cache_dir=str(tmp / "cache"),
                      bad_boxes=policy)  # fmt: skip


def voc_cfg(tmp: Path, policy: str = "error") -> DataConfig:
    return DataConfig(kind="voc", root=str(tmp / "VOC2007"), train="train", val="val",
                      cache_dir=str(tmp / "cache"), bad_boxes=policy)  # fmt: skip


def edit_json(path: Path, change) -> None:
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))


def raises_before_writing(cfg: DataConfig) -> str:
    """The error's message; the conversion cache holds nothing (not even a temp dir)."""
    with pytest.raises(DataValidationError) as info:
        resolve_data(cfg, seed=0)
    cache = Path(cfg.cache_dir)
    assert [p.name for p in cache.iterdir() if p.name.startswith(("coco-", "voc-"))] == []
    return str(info.value)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


# --- COCO -----------------------------------------------------------------------------------


def _del_image_key(data):
    del data["images"][2]["width"]


def _del_ann_key(data):
    del data["annotations"][2]["bbox"]


def _orphan(data):
    data["annotations"][2]["image_id"] = 99


def _wrong_size(data):
    data["images"][2].update(width=256, height=200)


def _outside(data):
    data["annotations"][2]["bbox"] = [100, 10, 40, 20]  # x + w = 140 > 128


def _no_annotations_key(data):
    del data["annotations"]


def _dup_image(data):
    data["images"][3]["id"] = data["images"][2]["id"]


@pytest.mark.parametrize(
    "change, expected",
    [
        (_no_annotations_key, "{json}: missing top-level key 'annotations': a COCO detection file needs"),
        (_del_image_key, "{json} image id 2: missing key 'width': every image needs id, file_name, width, height"),
        (_del_ann_key, "{json} annotation id 3: missing key 'bbox': every annotation needs id, image_id, category_id, bbox"),
        (_orphan, "{json} annotation id 3: image_id 99 is not in \"images\": add the image or remove the annotation"),
        (_dup_image, "{json} image id 2: listed twice in \"images\""),
        (_wrong_size, "{json} image id 2 (img1_2.png): annotations list 256x200 (width x height) but "
                      "{images}/img1_2.png is 128x128: fix the size in the annotations"),
        (_outside, "{json} annotation id 3 (image id 1, img1_1.png): bbox [100, 10, 40, 20] reaches outside the "
                   "128x128 image: fix the box, or pass data.bad_boxes=skip (drop such boxes) or data.bad_boxes=clip"),
    ],
)  # fmt: skip
def test_coco_annotation_errors_name_file_and_item(tmp_path, change, expected):
    write_coco(tmp_path)
    edit_json(tmp_path / "train.json", change)
    message = raises_before_writing(coco_cfg(tmp_path))
    assert expected.format(json=tmp_path / "train.json", images=tmp_path / "train") in message


def test_coco_invalid_json_names_line_and_column(tmp_path):
    write_coco(tmp_path)
    (tmp_path / "val.json").write_text('{\n "images": [],\n "annotations": [,]\n}')
    message = raises_before_writing(coco_cfg(tmp_path))
    assert message.startswith(
        f"{tmp_path / 'val.json'}: not valid JSON at line 3 column 18 (Expecting value)"
    )


@pytest.mark.parametrize(
    "damage, expected",
    [
        (Path.unlink, "{json} image id 2 (img1_2.png): image file {image} not found: put it in "
                      "data.train_images={images} or remove the image from train.json"),
        (lambda p: p.write_text("not an image"),
         "{json} image id 2 (img1_2.png): {image} is not an image file (PIL cannot identify it)"),
    ],
)  # fmt: skip
def test_coco_missing_or_unreadable_image_file_is_named(tmp_path, damage, expected):
    write_coco(tmp_path)
    damage(tmp_path / "train" / "img1_2.png")
    message = raises_before_writing(coco_cfg(tmp_path))
    image = tmp_path / "train" / "img1_2.png"
    assert expected.format(json=tmp_path / "train.json", image=image, images=tmp_path / "train") in message


def test_coco_bad_boxes_honour_skip_and_clip(tmp_path):
    write_coco(tmp_path)
    edit_json(tmp_path / "train.json", _outside)
    total = len(json.loads((tmp_path / "train.json").read_text())["annotations"])
    for policy, expected in (("skip", total - 1), ("clip", total)):
        files = resolve_data(coco_cfg(tmp_path, policy), seed=0)
        assert "cleaned-" in files.train
        boxes = sum(
            len(tf.train.Example.FromString(r).features.feature["image/object/bbox/xmax"].float_list.value)
            for r in tf.data.TFRecordDataset(files.train).as_numpy_iterator()
        )
        assert boxes == expected


def test_coco_val_without_annotations_is_refused(tmp_path):
    write_coco(tmp_path)
    edit_json(tmp_path / "val.json", lambda d: d.update(annotations=[]))
    with pytest.raises(DataValidationError) as info:
        resolve_data(coco_cfg(tmp_path), seed=0)
    assert str(info.value) == (
        f"val split {tmp_path / 'val.json'} has no boxes: mAP cannot be computed; add annotated images to it"
    )


def test_coco_undecodable_image_is_named_by_its_source_not_the_record(tmp_path):
    write_coco(tmp_path)
    truncate(tmp_path / "train" / "img1_2.png")  # the header reads fine: only a full decode fails
    with pytest.raises(DataValidationError) as info:
        resolve_data(coco_cfg(tmp_path), seed=0)
    message = str(info.value)
    assert message.startswith(f"{tmp_path / 'train.json'} image id 2 (img1_2.png): cannot decode (")
    assert re.search(r"cannot decode \(Invalid PNG data, size \d+\): replace the image or remove it", message)
    assert "train.record" not in message and "function_node" not in message
    record = next((tmp_path / "cache").glob("coco-*/train.record"))
    assert json.loads(sources_path(record).read_text())["source"] == str(tmp_path / "train.json")


# --- VOC ------------------------------------------------------------------------------------


def _voc_xml(tmp: Path, stem: str = "img1_0") -> Path:
    return tmp / "VOC2007" / "Annotations" / f"{stem}.xml"


def _edit_xml(old: str, new: str):
    """Replace the first match of the regex ``old``."""

    def change(path: Path) -> None:
        text, n = re.subn(old, new, path.read_text(), count=1)
        assert n == 1
        path.write_text(text)

    return change


@pytest.mark.parametrize(
    "change, expected",
    [
        (_edit_xml("</size>", ""), "{xml}: not valid XML at line 1 column"),
        (_edit_xml("<width>128</width>", ""), "{xml}: missing <size><width>: add the image's size"),
        (_edit_xml("<width>128</width>", "<width>0</width>"),
         "{xml}: <size><width> is 0.0, not a positive whole number: set it to the image's size"),
        (_edit_xml("<name>[^<]*</name>", ""), "{xml} object #1: missing <name>: give every object a class name"),
        (_edit_xml("<width>128</width>", "<width>100</width>"),
         "{xml}: annotations list 100x128 (width x height) but {jpegs}/img1_0.jpg is 128x128"),
        (_edit_xml("<filename>img1_0.jpg</filename>", "<filename>gone.jpg</filename>"),
         "{xml}: image file {jpegs}/gone.jpg not found: put it in {jpegs} (named by <filename>) "
         "or remove 'img1_0' from {lists}/train.txt"),
        (lambda p: p.unlink(),
         "{xml}: annotation file not found ({lists}/train.txt lists 'img1_0'): add it or remove the id"),
    ],
)  # fmt: skip
def test_voc_annotation_errors_name_the_xml(tmp_path, change, expected):
    write_voc(tmp_path)
    change(_voc_xml(tmp_path))
    message = raises_before_writing(voc_cfg(tmp_path))
    root = tmp_path / "VOC2007"
    assert (
        expected.format(xml=_voc_xml(tmp_path), jpegs=root / "JPEGImages", lists=root / "ImageSets" / "Main")
        in message
    )


def test_voc_missing_bndbox_and_bad_box(tmp_path):
    write_voc(tmp_path)
    text = _voc_xml(tmp_path).read_text()
    name = text.split("<name>")[1].split("</name>")[0]
    _edit_xml("<bndbox>.*?</bndbox>", "")(_voc_xml(tmp_path))
    message = raises_before_writing(voc_cfg(tmp_path))
    assert (
        f"{_voc_xml(tmp_path)} object #1 ({name}): missing <bndbox>: add the box or remove the object"
        in message
    )
    _voc_xml(tmp_path).write_text(text.replace("<xmin>", "<xmin>9", 1))  # xmin 9xx > xmax
    message = raises_before_writing(voc_cfg(tmp_path))
    assert f"{_voc_xml(tmp_path)} object #1 ({name}): bndbox [9" in message
    assert "has width or height <= 0: fix the box, or pass data.bad_boxes=skip" in message


def test_voc_undecodable_image_is_named_by_its_xml(tmp_path):
    write_voc(tmp_path)
    image = tmp_path / "VOC2007" / "JPEGImages" / "img2_1.jpg"
    buf = io.BytesIO()
    Image.open(image).save(buf, format="PNG")  # TF pads a truncated JPEG; it refuses a truncated PNG
    image.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DataValidationError) as info:
        resolve_data(voc_cfg(tmp_path), seed=0)
    assert str(info.value).startswith(f"{_voc_xml(tmp_path, 'img2_1')}: cannot decode (")


def test_voc_converts_and_each_record_names_its_xml(tmp_path):
    write_voc(tmp_path)
    files = resolve_data(voc_cfg(tmp_path), seed=0)
    sources = json.loads(sources_path(files.val).read_text())
    root = tmp_path / "VOC2007"
    assert sources["source"] == str(root / "ImageSets" / "Main" / "val.txt")
    assert sources["records"] == [str(_voc_xml(tmp_path, f"img2_{i}")) for i in range(6)]
    assert sum(1 for _ in tf.data.TFRecordDataset(files.val)) == 6
