"""``data=coco`` and ``data=voc``: convert annotations + images to stock OD API TFRecords once.

The class list comes from the annotations (COCO categories by id; VOC object names sorted)
and is written as ``label_map.pbtxt``. Outputs are cached by a content fingerprint
(annotation paths and bytes, image names and sizes) and built in a temp dir renamed into place, so a
failed conversion leaves nothing that looks finished.

Everything is checked at the source, before anything is written: the annotations parse and
have the keys we read, every box's image exists, and each image file opens and has the size
its annotations list (boxes are normalised by that size, so a wrong one silently shrinks or
stretches them). Bad boxes follow ``data.bad_boxes``: ``error`` stops here naming the
annotation; ``skip`` / ``clip`` pass them on to :mod:`validate`, which drops or clips them.
Beside each record file, :func:`validate.write_sources` notes which annotation file and image
every record came from, so later errors name those instead of ``train.record #2``.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from orchestrator.data.files import DatasetFiles
from orchestrator.data.tfrecords import (
    Box,
    cached_build,
    example_from_encoded,
    write_label_map,
    write_records,
)
from orchestrator.data.validate import DataValidationError, write_sources

CONVERTER_VERSION = 2  # part of the cache key: bump when the records or files written change
TF_FORMATS = {"JPEG": "jpeg", "PNG": "png", "GIF": "gif", "BMP": "bmp"}  # what tf.io.decode_image reads
BAD_BOX_FIX = "fix the box, or pass data.bad_boxes=skip (drop such boxes) or data.bad_boxes=clip"


@dataclass(frozen=True)
class SourceImage:
    """One image of a split as its annotations describe it (boxes normalised by that size)."""

    where: str  # the user's item, e.g. "/d/train.json image id 7 (img7.jpg)" or "/d/Annotations/5.xml"
    path: Path
    width: int
    height: int
    boxes: list[Box]
    folder: str  # where the image was looked for, for the "not found" fix
    drop: str  # how to leave it out instead, e.g. "remove the image from train.json"


@dataclass(frozen=True)
class Split:
    source: str  # the annotation file or image list the split comes from
    images: list[SourceImage]


def _normalised(where: str, xyxy: list[float], width: int, height: int, strict: bool) -> list[float]:
    """[ymin, xmin, ymax, xmax] from pixel [x0, y0, x1, y1]. A bad box (not finite, empty, outside
    the image; as :mod:`validate` judges the float32 record) raises when ``strict``, else goes
    into the record for ``validate`` to drop or clip per ``data.bad_boxes``."""
    x0, y0, x1, y1 = xyxy
    box = [float(np.float32(v)) for v in (y0 / height, x0 / width, y1 / height, x1 / width)]
    problem = None
    if not all(math.isfinite(v) for v in xyxy):
        problem = "is not finite"
    elif x1 <= x0 or y1 <= y0:
        problem = "has width or height <= 0"
    elif not all(0.0 <= v <= 1.0 for v in box):
        problem = f"reaches outside the {width}x{height} image"
    if problem and strict:
        raise DataValidationError(f"{where} {problem}: {BAD_BOX_FIX}")
    return box


def check_image_file(image: SourceImage) -> None:
    """Raise naming the user's item unless the file exists, opens, is a format TensorFlow decodes
    and has the listed size. Reads the header only: ``validate`` decodes every record later."""
    if not image.path.is_file():
        raise DataValidationError(
            f"{image.where}: image file {image.path} not found: put it in {image.folder} or {image.drop}"
        )
    try:
        with Image.open(image.path) as opened:
            fmt, size = opened.format, opened.size
    except UnidentifiedImageError:
        raise DataValidationError(
            f"{image.where}: {image.path} is not an image file (PIL cannot identify it): "
            f"replace it or {image.drop}"
        ) from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
        raise DataValidationError(
            f"{image.where}: {image.path} is not a readable image ({exc}): replace it or {image.drop}"
        ) from exc
    if fmt not in TF_FORMATS:
        raise DataValidationError(
            f"{image.where}: {image.path} is a {fmt} image; TensorFlow decodes only JPEG, PNG, GIF "
            f"and BMP: convert it"
        )
    if size != (image.width, image.height):
        raise DataValidationError(
            f"{image.where}: annotations list {image.width}x{image.height} (width x height) but "
            f"{image.path} is {size[0]}x{size[1]}: fix the size in the annotations (boxes are "
            f"normalised by it)"
        )


def _example(image: SourceImage, names: list[str]):
    encoded = image.path.read_bytes()
    with Image.open(io.BytesIO(encoded)) as opened:
        fmt = TF_FORMATS[opened.format]
    return example_from_encoded(encoded, fmt, image.width, image.height, image.path.name, image.boxes, names)


def _content_key(files: list[Path], image_dirs: list[Path]) -> str:
    digest = hashlib.sha256(f"converter {CONVERTER_VERSION}".encode())
    for path in files:  # the path too: the sources files name it in error messages
        digest.update(f"{path.resolve()}\0".encode() + path.read_bytes())
    for directory in image_dirs:
        for image in sorted(directory.iterdir()) if directory.is_dir() else []:
            digest.update(f"{image.name}:{image.stat().st_size}".encode())
    return digest.hexdigest()[:12]


def _write_dataset(target: Path, key: str, names: list[str], splits: dict[str, Split]) -> DatasetFiles:
    """train/val records, their sources and the label map into ``target``, once (temp dir +
    rename). Image files are checked first, so a bad one leaves nothing behind."""
    if not target.is_dir():
        for split in splits.values():
            for image in split.images:
                check_image_file(image)

    def build(tmp: Path) -> None:
        for name, split in splits.items():
            record = tmp / f"{name}.record"
            write_records(record, (_example(image, names) for image in split.images))
            write_sources(record, split.source, [image.where for image in split.images])
        write_label_map(tmp / "label_map.pbtxt", names)

    cached_build(target, build)
    files = [str(target / n) for n in ("train.record", "val.record", "label_map.pbtxt")]
    return DatasetFiles(*files, num_classes=len(names), fingerprint=key)


def _is_id(value) -> bool:
    return isinstance(value, int | str) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _size(where: str, key: str, value, fix: str) -> int:
    if not _is_number(value) or value != int(value) or value <= 0:
        raise DataValidationError(f"{where}: {key} is {value!r}, not a positive whole number: {fix}")
    return int(value)


# --- COCO -----------------------------------------------------------------------------------

COCO_KEYS = {
    "image": ("id", "file_name", "width", "height"),
    "annotation": ("id", "image_id", "category_id", "bbox"),
    "category": ("id", "name"),
}


def _load_coco(path: Path) -> dict:
    """The parsed file, with the top-level keys and every item's keys we read present."""
    try:
        data = json.loads(path.read_bytes())
    except json.JSONDecodeError as exc:
        raise DataValidationError(
            f"{path}: not valid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}): fix the "
            f"file (python -m json.tool shows the same place)"
        ) from None
    except UnicodeDecodeError as exc:
        raise DataValidationError(
            f"{path}: not a UTF-8 JSON text file ({exc}): point at the COCO JSON"
        ) from None
    if not isinstance(data, dict):
        raise DataValidationError(
            f'{path}: the top level is a JSON {type(data).__name__}, not an object with "images", '
            f'"annotations" and "categories": point at a COCO detection annotation file'
        )
    for section, kind in (("images", "image"), ("annotations", "annotation"), ("categories", "category")):
        if section not in data:
            raise DataValidationError(
                f'{path}: missing top-level key {section!r}: a COCO detection file needs "images", '
                f'"annotations" and "categories" (an image-info-only file cannot train or evaluate)'
            )
        if not isinstance(data[section], list):
            raise DataValidationError(f"{path}: {section!r} is not a list: fix the file")
        for index, item in enumerate(data[section]):
            item_name = f"{path} {section}[{index}]"
            if not isinstance(item, dict):
                raise DataValidationError(f"{item_name}: is not a JSON object: fix the file")
            if _is_id(item.get("id")):
                item_name = f"{path} {kind} id {item['id']}"
            for key in COCO_KEYS[kind]:
                if key not in item:
                    raise DataValidationError(
                        f"{item_name}: missing key {key!r}: every {kind} needs "
                        f"{', '.join(COCO_KEYS[kind])}"
                    )
            for key in ("id", "image_id", "category_id"):
                if key in item and not _is_id(item[key]):
                    raise DataValidationError(f"{item_name}: {key} is {item[key]!r}: use a number or string")
    return data


def _coco_categories(docs: dict[Path, dict]) -> dict:
    categories: dict = {}
    seen_in: dict = {}
    for path, data in docs.items():
        for cat in data["categories"]:
            if cat["id"] in categories and categories[cat["id"]] != cat["name"]:
                raise DataValidationError(
                    f"{path} category id {cat['id']}: named {cat['name']!r} here but "
                    f"{categories[cat['id']]!r} in {seen_in[cat['id']]}: use one category list"
                )
            categories[cat["id"]], seen_in[cat["id"]] = cat["name"], path
    if not categories:
        raise DataValidationError(
            f"{next(iter(docs))}: no categories in the COCO annotations: list the classes"
        )
    return categories


def _coco_split(
    path: Path, data: dict, images_dir: Path, folder_key: str, id_map: dict, strict: bool
) -> Split:
    images: dict = {}  # id -> (where, file_name, width, height)
    for image in data["images"]:
        where = f"{path} image id {image['id']}"
        if image["id"] in images:
            raise DataValidationError(f'{where}: listed twice in "images": give each image its own id')
        name = image["file_name"]
        if not isinstance(name, str) or not name:
            raise DataValidationError(f"{where}: file_name is {name!r}: name the image file")
        where = f"{where} ({name})"
        fix = "set it to the image's size"
        width, height = (_size(where, k, image[k], fix) for k in ("width", "height"))
        images[image["id"]] = (where, name, width, height)
    boxes: dict = {}
    for ann in data["annotations"]:
        where = f"{path} annotation id {ann['id']}"
        if ann["image_id"] not in images:
            raise DataValidationError(
                f"{where}: image_id {ann['image_id']!r} is not in \"images\": add the image or "
                f"remove the annotation"
            )
        if ann["category_id"] not in id_map:
            raise DataValidationError(
                f"{where}: unknown category_id {ann['category_id']!r}: add it to \"categories\" "
                f"(ids {sorted(id_map, key=str)})"
            )
        bbox = ann["bbox"]
        if not isinstance(bbox, list) or len(bbox) != 4 or not all(_is_number(v) for v in bbox):
            raise DataValidationError(f"{where}: bbox is {bbox!r}, not [x, y, width, height] numbers: fix it")
        if ann.get("iscrowd", 0):
            continue  # crowd regions are not boxes to detect (the OD API's converter skips them too)
        _, name, width, height = images[ann["image_id"]]
        x, y, w, h = bbox
        box_where = f"{where} (image id {ann['image_id']}, {name}): bbox {bbox}"
        box = _normalised(box_where, [x, y, x + w, y + h], width, height, strict)
        boxes.setdefault(ann["image_id"], []).append(Box(id_map[ann["category_id"]], *box))
    folder, drop = f"{folder_key}={images_dir}", f"remove the image from {path.name}"
    return Split(
        str(path),
        [
            SourceImage(where, images_dir / name, width, height, boxes.get(image_id, []), folder, drop)
            for image_id, (where, name, width, height) in images.items()
        ],
    )


def convert_coco(
    train: str | None,
    train_images: str | None,
    val: str | None,
    val_images: str | None,
    cache_dir: Path,
    strict: bool,
) -> DatasetFiles:
    given = {
        "data.train": train,
        "data.train_images": train_images,
        "data.val": val,
        "data.val_images": val_images,
    }
    for key, value in given.items():
        if not value:
            raise DataValidationError(
                f"data=coco needs {key}: pass data.train/data.val (annotation JSON) and "
                f"data.train_images/data.val_images (image folders)"
            )
    paths = [Path(str(train)).expanduser(), Path(str(val)).expanduser()]
    dirs = [Path(str(train_images)).expanduser(), Path(str(val_images)).expanduser()]
    for p, key in zip(paths, ("data.train", "data.val"), strict=True):
        if not p.is_file():
            raise DataValidationError(f"{key}={str(p)!r}: COCO annotation file not found: point {key} at it")
    for d, key in zip(dirs, ("data.train_images", "data.val_images"), strict=True):
        if not d.is_dir():
            raise DataValidationError(f"{key}={str(d)!r}: image folder not found: point {key} at it")
    docs = {p: _load_coco(p) for p in paths}
    categories = _coco_categories(docs)
    ids = sorted(categories, key=lambda c: (isinstance(c, str), c))
    id_map = {cid: i for i, cid in enumerate(ids, start=1)}
    names = [str(categories[c]) for c in ids]
    splits = {
        "train": _coco_split(paths[0], docs[paths[0]], dirs[0], "data.train_images", id_map, strict),
        "val": _coco_split(paths[1], docs[paths[1]], dirs[1], "data.val_images", id_map, strict),
    }
    key = _content_key(paths, dirs)
    return _write_dataset(cache_dir / f"coco-{key}", key, names, splits)


# --- Pascal VOC -----------------------------------------------------------------------------


@dataclass(frozen=True)
class _VocFile:
    xml: Path
    filename: str
    width: int
    height: int
    objects: list[tuple[str, str, list[float]]]  # (where, class name, [xmin, ymin, xmax, ymax])


def _voc_file(xml: Path, listing: Path) -> _VocFile:
    if not xml.is_file():
        raise DataValidationError(
            f"{xml}: annotation file not found ({listing} lists {xml.stem!r}): add it or remove "
            f"the id from the list"
        )
    try:
        root = ET.parse(xml).getroot()
    except ET.ParseError as exc:
        line, column = exc.position
        raise DataValidationError(
            f"{xml}: not valid XML at line {line} column {column} ({exc.msg.split(':')[0]}): fix the file"
        ) from None
    sizes = []
    for key in ("width", "height"):
        text = root.findtext(f"size/{key}")
        if text is None:
            raise DataValidationError(f"{xml}: missing <size><{key}>: add the image's size")
        try:
            value = float(text)
        except ValueError:
            value = text.strip()
        sizes.append(_size(str(xml), f"<size><{key}>", value, "set it to the image's size"))
    objects = []
    for n, obj in enumerate(root.findall("object"), start=1):
        name = (obj.findtext("name") or "").strip()
        if not name:
            raise DataValidationError(f"{xml} object #{n}: missing <name>: give every object a class name")
        where = f"{xml} object #{n} ({name})"
        box = obj.find("bndbox")
        if box is None:
            raise DataValidationError(f"{where}: missing <bndbox>: add the box or remove the object")
        coords = []
        for key in ("xmin", "ymin", "xmax", "ymax"):
            text = box.findtext(key)
            if text is None:
                raise DataValidationError(f"{where}: missing <bndbox><{key}>: add it")
            try:
                coords.append(float(text))
            except ValueError:
                raise DataValidationError(f"{where}: <{key}> is {text!r}, not a number: fix it") from None
        objects.append((where, name, coords))
    filename = (root.findtext("filename") or "").strip() or f"{xml.stem}.jpg"
    return _VocFile(xml, filename, sizes[0], sizes[1], objects)


def _voc_listing(root: Path, split: str) -> tuple[Path, list[str]]:
    listing = root / "ImageSets" / "Main" / f"{split}.txt"
    if not listing.is_file():
        raise DataValidationError(
            f"{listing}: VOC split list not found (data.train / data.val name the splits)"
        )
    return listing, [line.split()[0] for line in listing.read_text().splitlines() if line.strip()]


def _voc_split(listing: Path, files: list[_VocFile], names: list[str], strict: bool) -> Split:
    index = {n: i for i, n in enumerate(names, start=1)}
    images = []
    for f in files:
        boxes = []
        for where, name, (x0, y0, x1, y1) in f.objects:
            box = _normalised(
                f"{where}: bndbox {[x0, y0, x1, y1]}", [x0, y0, x1, y1], f.width, f.height, strict
            )
            boxes.append(Box(index[name], *box))
        folder = f"{f.xml.parent.parent / 'JPEGImages'} (named by <filename>)"
        images.append(
            SourceImage(
                where=str(f.xml),
                path=f.xml.parent.parent / "JPEGImages" / f.filename,
                width=f.width,
                height=f.height,
                boxes=boxes,
                folder=folder,
                drop=f"remove {f.xml.stem!r} from {listing}",
            )
        )
    return Split(str(listing), images)


def convert_voc(
    root_dir: str, train_split: str, val_split: str, cache_dir: Path, strict: bool = True
) -> DatasetFiles:
    root = Path(root_dir).expanduser()
    if not (root / "Annotations").is_dir():
        raise DataValidationError(
            f"data.root={root_dir!r}: no Annotations/ folder (point it at VOCdevkit/VOC2007)"
        )
    listings = {
        split: _voc_listing(root, name) for split, name in (("train", train_split), ("val", val_split))
    }
    parsed = {
        split: [_voc_file(root / "Annotations" / f"{i}.xml", listing) for i in ids]
        for split, (listing, ids) in listings.items()
    }
    names = sorted({name for files in parsed.values() for f in files for _, name, _ in f.objects})
    splits = {split: _voc_split(listings[split][0], parsed[split], names, strict) for split in parsed}
    xmls = sorted({f.xml for files in parsed.values() for f in files})
    key = _content_key([*xmls, *(listing for listing, _ in listings.values())], [root / "JPEGImages"])
    return _write_dataset(cache_dir / f"voc-{key}", key, names, splits)
