"""``data=coco`` and ``data=voc``: convert annotations + images to stock OD API TFRecords once.

The class list comes from the annotations (COCO categories by id; VOC object names sorted)
and is written as ``label_map.pbtxt``. Outputs are cached by a content fingerprint
(annotation bytes, image names and sizes) and built in a temp dir renamed into place, so a
failed conversion leaves nothing that looks finished.
"""

from __future__ import annotations

import hashlib
import json
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path

import tensorflow as tf

from orchestrator.data.shapes import DatasetFiles
from orchestrator.data.tfrecords import cached_build, write_label_map, write_records
from orchestrator.data.validate import DataValidationError


def _feature(values, kind):
    if kind == "bytes":
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=values))
    if kind == "float":
        return tf.train.Feature(float_list=tf.train.FloatList(value=values))
    return tf.train.Feature(int64_list=tf.train.Int64List(value=values))


def image_example(
    path: Path, width: int, height: int, boxes: list[tuple[int, list[float]]], names: list[str]
):
    """A stock OD API example from an encoded image file and (class id, [ymin, xmin, ymax, xmax])."""
    if not path.is_file():
        raise DataValidationError(f"{path}: image file not found")
    encoded = path.read_bytes()
    fmt = path.suffix.lower().lstrip(".").replace("jpg", "jpeg").encode()
    coords = list(zip(*[b for _, b in boxes], strict=True)) or [(), (), (), ()]
    feature = {
        "image/height": _feature([height], "int"),
        "image/width": _feature([width], "int"),
        "image/filename": _feature([path.name.encode()], "bytes"),
        "image/source_id": _feature([path.name.encode()], "bytes"),
        "image/key/sha256": _feature([hashlib.sha256(encoded).hexdigest().encode()], "bytes"),
        "image/encoded": _feature([encoded], "bytes"),
        "image/format": _feature([fmt], "bytes"),
        "image/object/bbox/ymin": _feature(list(coords[0]), "float"),
        "image/object/bbox/xmin": _feature(list(coords[1]), "float"),
        "image/object/bbox/ymax": _feature(list(coords[2]), "float"),
        "image/object/bbox/xmax": _feature(list(coords[3]), "float"),
        "image/object/class/label": _feature([c for c, _ in boxes], "int"),
        "image/object/class/text": _feature([names[c - 1].encode() for c, _ in boxes], "bytes"),
    }
    return tf.train.Example(features=tf.train.Features(feature=feature))


def _content_key(files: list[Path], image_dirs: list[Path]) -> str:
    digest = hashlib.sha256()
    for path in files:
        digest.update(path.read_bytes())
    for directory in image_dirs:
        for image in sorted(directory.iterdir()) if directory.is_dir() else []:
            digest.update(f"{image.name}:{image.stat().st_size}".encode())
    return digest.hexdigest()[:12]


def _write_dataset(target: Path, key: str, names: list[str], train, val) -> DatasetFiles:
    """train/val records and the label map into ``target``, once (temp dir + rename)."""

    def build(tmp: Path) -> None:
        write_records(tmp / "train.record", train())
        write_records(tmp / "val.record", val())
        write_label_map(tmp / "label_map.pbtxt", names)

    cached_build(target, build)
    files = [str(target / n) for n in ("train.record", "val.record", "label_map.pbtxt")]
    return DatasetFiles(*files, num_classes=len(names), fingerprint=key)


# --- COCO -----------------------------------------------------------------------------------


def _coco_examples(
    annotation: Path, images: Path, id_map: dict[int, int], names: list[str], strict: bool
) -> Iterator:
    data = json.loads(annotation.read_text())
    by_image: dict[int, list] = {}
    for ann in data.get("annotations", []):
        if not ann.get("iscrowd", 0):
            by_image.setdefault(ann["image_id"], []).append(ann)
    for image in data["images"]:
        width, height = image["width"], image["height"]
        boxes = []
        for ann in by_image.get(image["id"], []):
            x, y, w, h = ann["bbox"]
            if strict and (w <= 0 or h <= 0):
                raise DataValidationError(
                    f"{annotation.name} annotation id {ann['id']}: bbox {ann['bbox']} has width or height <= 0 "
                    f"(or pass data.bad_boxes=skip)"
                )
            if ann["category_id"] not in id_map:
                raise DataValidationError(
                    f"{annotation.name} annotation id {ann['id']}: unknown category_id {ann['category_id']}"
                )
            boxes.append(
                (id_map[ann["category_id"]], [y / height, x / width, (y + h) / height, (x + w) / width])
            )
        yield image_example(images / image["file_name"], width, height, boxes, names)


def convert_coco(
    train: str, train_images: str, val: str, val_images: str, cache_dir: Path, strict: bool
) -> DatasetFiles:
    paths = [Path(train).expanduser(), Path(val).expanduser()]
    dirs = [Path(train_images).expanduser(), Path(val_images).expanduser()]
    for p in paths:
        if not p.is_file():
            raise DataValidationError(f"{p}: COCO annotation file not found (data.train / data.val)")
    categories = {}
    for p in paths:
        for cat in json.loads(p.read_text()).get("categories", []):
            categories[cat["id"]] = cat["name"]
    if not categories:
        raise DataValidationError(f"{paths[0]}: no categories in the COCO annotations")
    ids = sorted(categories)
    id_map = {cid: i for i, cid in enumerate(ids, start=1)}
    names = [categories[c] for c in ids]
    key = _content_key(paths, dirs)
    return _write_dataset(
        cache_dir / f"coco-{key}",
        key,
        names,
        lambda: _coco_examples(paths[0], dirs[0], id_map, names, strict),
        lambda: _coco_examples(paths[1], dirs[1], id_map, names, strict),
    )


# --- Pascal VOC -----------------------------------------------------------------------------


def _voc_objects(xml_path: Path) -> tuple[str, int, int, list[tuple[str, list[float]]]]:
    if not xml_path.is_file():
        raise DataValidationError(f"{xml_path}: annotation file not found")
    root = ET.parse(xml_path).getroot()
    width = int(root.findtext("size/width"))
    height = int(root.findtext("size/height"))
    objects = []
    for obj in root.iter("object"):
        box = obj.find("bndbox")
        xmin, ymin, xmax, ymax = (float(box.findtext(k)) for k in ("xmin", "ymin", "xmax", "ymax"))
        objects.append(
            (obj.findtext("name").strip(), [ymin / height, xmin / width, ymax / height, xmax / width])
        )
    return root.findtext("filename"), width, height, objects


def _voc_ids(root: Path, split: str) -> list[str]:
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise DataValidationError(
            f"{listing}: VOC split list not found (data.train / data.val name the splits)"
        )
    return [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]


def _voc_examples(root: Path, ids: list[str], names: list[str]) -> Iterator:
    index = {n: i for i, n in enumerate(names, start=1)}
    for image_id in ids:
        filename, width, height, objects = _voc_objects(root / "Annotations" / f"{image_id}.xml")
        boxes = [(index[name], box) for name, box in objects]
        yield image_example(
            root / "JPEGImages" / (filename or f"{image_id}.jpg"), width, height, boxes, names
        )


def convert_voc(root_dir: str, train_split: str, val_split: str, cache_dir: Path) -> DatasetFiles:
    root = Path(root_dir).expanduser()
    if not (root / "Annotations").is_dir():
        raise DataValidationError(
            f"data.root={root_dir!r}: no Annotations/ folder (point it at VOCdevkit/VOC2007)"
        )
    train_ids, val_ids = _voc_ids(root, train_split), _voc_ids(root, val_split)
    xmls = [root / "Annotations" / f"{i}.xml" for i in train_ids + val_ids]
    names = sorted({name for x in xmls for name, _ in _voc_objects(x)[3]})
    key = _content_key([*xmls, root / "ImageSets" / "Main" / f"{train_split}.txt"], [root / "JPEGImages"])
    return _write_dataset(
        cache_dir / f"voc-{key}",
        key,
        names,
        lambda: _voc_examples(root, train_ids, names),
        lambda: _voc_examples(root, val_ids, names),
    )
