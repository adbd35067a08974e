"""Ground-truth boxes from a COCO json file or a folder of YOLO txt files, in image pixels.

Both give {image file name: [(x1, y1, x2, y2, class_id), ...]} with class ids 0..C-1:
COCO category ids are mapped in sorted id order (the order YOLOv5 numbers COCO's 80
classes in); YOLO class ids are taken as written.
"""

from __future__ import annotations

import json
import math
from collections import defaultdict
from pathlib import Path
from typing import Dict, List, NamedTuple, Optional, Sequence, Tuple, Union

Box = Tuple[float, float, float, float, int]

YOLO_CLASS_NAMES_FILE = "classes.txt"
YOLO_DATA_FILE = "data.yaml"  # ultralytics' dataset file; its `names` name the classes


class GroundTruth(NamedTuple):
    boxes: Dict[str, List[Box]]  # keyed by image file name (no folder)
    class_names: Optional[List[str]]  # by class id; None when the labels do not name them


def load_ground_truth(path: Union[str, Path], image_files: Sequence[Union[str, Path]],
                      num_classes: Optional[int] = None) -> GroundTruth:
    """Ground truth for `image_files` from a COCO json file or a YOLO label folder; with
    `num_classes` (the model's), a box of a class the model does not have is refused."""
    path = Path(path)
    names = [Path(image).name for image in image_files]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f"images are matched to labels by file name, and these names occur more than once: "
                         f"{', '.join(duplicates)}")
    if path.is_dir():
        return _load_yolo(path, [Path(image) for image in image_files], num_classes)
    if path.is_file():
        return _load_coco(path, names, num_classes)
    raise ValueError(f"labels not found: {path} (give a COCO json file or a folder of YOLO txt files)")


def _load_coco(path: Path, image_names: List[str], num_classes: Optional[int]) -> GroundTruth:
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ValueError(f"{path}: cannot read as COCO json: {exc}") from None
    if not isinstance(data, dict) or not isinstance(data.get("images"), list):
        raise ValueError(f"{path}: not a COCO json file: it needs an 'images' list")
    annotations = data.get("annotations", [])
    categories = data.get("categories")
    if not isinstance(categories, list) or not categories:
        raise ValueError(f"{path}: needs a 'categories' list (id and name per class) to number the classes")
    if not all(isinstance(category, dict) and isinstance(category.get("id"), int) for category in categories):
        raise ValueError(f"{path}: every entry of 'categories' needs an integer 'id'")
    if not all(isinstance(image, dict) and "id" in image for image in data["images"]):
        raise ValueError(f"{path}: every entry of 'images' needs an 'id'")
    category_ids = sorted(category["id"] for category in categories)
    class_of = {category_id: index for index, category_id in enumerate(category_ids)}
    names_by_id = {category["id"]: str(category.get("name", category["id"])) for category in categories}

    ids_by_name: Dict[str, List[int]] = defaultdict(list)
    for image in data["images"]:
        ids_by_name[Path(str(image.get("file_name", ""))).name].append(image["id"])
    image_id_of = {}
    for name in image_names:
        found = ids_by_name.get(name, [])
        if not found:
            raise ValueError(f"{path}: has no image with file name '{name}' "
                             f"(images are matched by the base name of 'file_name')")
        if len(found) > 1:
            raise ValueError(f"{path}: {len(found)} images have the file name '{name}' (ids {found})")
        image_id_of[name] = found[0]

    boxes_by_image_id: Dict[int, List[Box]] = defaultdict(list)
    wanted = set(image_id_of.values())
    for annotation in annotations:
        if annotation.get("image_id") not in wanted or annotation.get("iscrowd", 0):
            continue  # crowd regions are not objects to find one by one
        where = f"{path}: annotation {annotation.get('id', '?')}"
        if annotation.get("category_id") not in class_of:
            raise ValueError(f"{where}: category_id {annotation.get('category_id')} is not in 'categories'")
        class_id = class_of[annotation["category_id"]]
        if num_classes is not None and class_id >= num_classes:
            raise ValueError(f"{where}: category_id {annotation['category_id']} is class {class_id} (categories are "
                             f"numbered in id order), but the model has {num_classes} classes (0..{num_classes - 1})")
        bbox = annotation.get("bbox")
        if not (isinstance(bbox, list) and len(bbox) == 4 and all(_is_finite_number(v) for v in bbox)):
            raise ValueError(f"{where}: 'bbox' must be [x, y, width, height], got {bbox!r}")
        x, y, w, h = (float(v) for v in bbox)
        boxes_by_image_id[annotation["image_id"]].append((x, y, x + w, y + h, class_id))
    boxes = {name: boxes_by_image_id.get(image_id, []) for name, image_id in image_id_of.items()}
    named = any("name" in category for category in categories)  # else the model's metadata may name them
    return GroundTruth(boxes, [names_by_id[category_id] for category_id in category_ids] if named else None)


def _load_yolo(folder: Path, image_files: List[Path], num_classes: Optional[int]) -> GroundTruth:
    from PIL import Image, UnidentifiedImageError

    class_names = _yolo_class_names(folder)
    label_files = {image.name: folder / f"{image.stem}.txt" for image in image_files}
    if image_files and not any(label.is_file() for label in label_files.values()):
        raise ValueError(f"{folder}: no label file for any of the {len(image_files)} images "
                         f"(expected e.g. {label_files[image_files[0].name].name})")
    boxes: Dict[str, List[Box]] = {}
    for image in image_files:
        try:
            with Image.open(image) as opened:
                width, height = opened.size
        except (OSError, UnidentifiedImageError) as exc:
            raise ValueError(f"cannot read image {image} to scale its YOLO labels: {exc}") from None
        label = label_files[image.name]
        # YOLO convention: an image without a label file has no objects.
        boxes[image.name] = (_read_yolo_file(label, width, height, class_names, num_classes)
                             if label.is_file() else [])
    return GroundTruth(boxes, class_names)


def _yolo_class_names(folder: Path) -> Optional[List[str]]:
    """From the folder's classes.txt (a name per line), else its data.yaml's `names` (a list, or a
    mapping from class id to name, as ultralytics writes it); None without either."""
    names_file = folder / YOLO_CLASS_NAMES_FILE
    if names_file.is_file():
        return [line.strip() for line in names_file.read_text().splitlines() if line.strip()]
    data_file = folder / YOLO_DATA_FILE
    if not data_file.is_file():
        return None
    import yaml

    try:
        data = yaml.safe_load(data_file.read_text())
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise ValueError(f"{data_file}: cannot read as YAML: {exc}") from None
    names = class_names_from(data.get("names") if isinstance(data, dict) else None)
    if names is None:
        raise ValueError(f"{data_file}: needs `names`, a list of class names or a mapping from class id to name")
    return names


def class_names_from(value) -> Optional[List[str]]:
    """Class names by class id from a list, or from a mapping {id: name} with ids 0..C-1 (an id left out
    keeps its number as its name); None for anything else."""
    if isinstance(value, (list, tuple)) and value:
        return [str(name) for name in value]
    if isinstance(value, dict) and value and all(isinstance(k, int) and not isinstance(k, bool) and 0 <= k < 100_000
                                                 for k in value):
        return [str(value.get(i, i)) for i in range(max(value) + 1)]
    return None


def _read_yolo_file(label: Path, width: int, height: int, class_names: Optional[List[str]],
                    num_classes: Optional[int]) -> List[Box]:
    boxes = []
    for number, line in enumerate(label.read_text().splitlines(), start=1):
        fields = line.split()
        if not fields:
            continue
        where = f"{label}: line {number}"
        if len(fields) != 5:
            raise ValueError(f"{where}: expected 5 values 'class cx cy w h', got {len(fields)}: {line.strip()!r}")
        try:
            values = [float(field) for field in fields]
        except ValueError:
            raise ValueError(f"{where}: not numbers: {line.strip()!r}") from None
        class_value, cx, cy, w, h = values
        if not (class_value >= 0 and class_value.is_integer()):
            raise ValueError(f"{where}: class must be a whole number >= 0, got {fields[0]!r}")
        class_id = int(class_value)
        if class_names is not None and class_id >= len(class_names):
            source = YOLO_CLASS_NAMES_FILE if (label.parent / YOLO_CLASS_NAMES_FILE).is_file() else YOLO_DATA_FILE
            raise ValueError(f"{where}: class {class_id} but {source} names only {len(class_names)} classes")
        if num_classes is not None and class_id >= num_classes:
            raise ValueError(f"{where}: class {class_id}, but the model has {num_classes} classes "
                             f"(0..{num_classes - 1})")
        if not all(math.isfinite(v) and 0.0 <= v <= 1.0 for v in (cx, cy, w, h)) or w <= 0 or h <= 0:
            raise ValueError(f"{where}: cx cy w h must be normalised to 0..1 with w, h > 0, "
                             f"got {' '.join(fields[1:])}")
        boxes.append(((cx - w / 2) * width, (cy - h / 2) * height,
                      (cx + w / 2) * width, (cy + h / 2) * height, class_id))
    return boxes


def _is_finite_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
