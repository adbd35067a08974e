"""Input sources and preprocessing: the arrays that every backend gets, sample by sample.

Arrays keep the layout the spec declares (`nhwc` images stay NHWC, as an app on the
board would feed them); each 4-D input carries its layout so the NPU gets the matching
`data_format` and the reference converts explicitly to the ONNX model's NCHW.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass, field
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from . import decoded_images
from .errors import SpecError
from .onnx_model import ModelInfo, TensorInfo
from .spec import FileInput, ImageInput, RandomInput, Spec


@dataclass
class InputSet:
    names: List[str]  # model input order
    layouts: List[Optional[str]]  # 'nchw' / 'nhwc' for 4-D inputs, None for the rest
    samples: List[List[np.ndarray]]  # [sample][input]
    labels: List[str]  # one per sample, for messages
    image_paths: List[Optional[str]] = field(default_factory=list)  # per sample, from the first image input

    def __len__(self) -> int:
        return len(self.samples)


@dataclass
class _Samples:
    arrays: List[np.ndarray]
    labels: List[str]
    layout: Optional[str]
    paths: Optional[List[str]] = None  # image files, for image inputs


def prepare_inputs(spec: Spec, model: ModelInfo, images_folder: Optional[Path] = None) -> InputSet:
    """Every sample's arrays. With `images_folder`, decoded images are kept there (decoded_images.py)."""
    known = [t.name for t in model.inputs]
    for name in spec.inputs:
        if name not in known:
            raise SpecError(spec.path, f"inputs.{name}", f"the model has no input '{name}'",
                            f"its inputs are: {', '.join(known)}")
    presets = spec.convert.dynamic_input
    if presets is not None:
        _check_presets(spec, model, presets)
    per_input = []
    for index, tensor in enumerate(model.inputs):
        source = spec.inputs.get(tensor.name) or RandomInput()
        field_name = f"inputs.{tensor.name}"
        _check_layout_applies(spec, field_name, tensor, source)
        if isinstance(source, RandomInput):
            samples = _random_samples(spec, field_name, tensor, index, source, presets)
        elif isinstance(source, ImageInput):
            samples = _image_samples(spec, field_name, tensor, source, images_folder)
        else:
            samples = _file_samples(spec, field_name, tensor, source)
        for array, label in zip(samples.arrays, samples.labels):
            _check_shape(spec, field_name, tensor, array, samples.layout, presets, index)
            _check_fits_model_dtype(spec, field_name, tensor, array, label)
        per_input.append(samples)
    return _zip_samples(spec, model, per_input)


def _check_layout_applies(spec: Spec, field_name: str, tensor: TensorInfo, source) -> None:
    """Images are always 4-D (checked with the images); a file or random input may not be."""
    if isinstance(source, (FileInput, RandomInput)) and source.layout is not None and len(tensor.shape) != 4:
        raise SpecError(spec.path, f"{field_name}.layout", f"a layout applies only to a 4-D input, and "
                                                           f"'{tensor.name}' is {tensor.shape_text()}, so it would do nothing",
                        "remove `layout`")


def integer_problem(array: np.ndarray, dtype: np.dtype) -> Optional[str]:
    """Why `array` cannot become the integer `dtype` without changing its values, or None if it can."""
    if array.dtype.kind == "b" or array.size == 0:
        return None
    if array.dtype.kind in "fc":
        if not np.isfinite(array).all():
            return "holds NaN or Inf"
        fractional = array[array != np.round(array)]
        if fractional.size:
            return f"holds values with a fraction (e.g. {fractional.flat[0]:g})"
    low, high, limits = array.min(), array.max(), np.iinfo(dtype)
    if low < limits.min or high > limits.max:
        return f"holds values from {low:g} to {high:g}, outside {dtype.name}'s {limits.min}..{limits.max}"
    return None


def _check_fits_model_dtype(spec: Spec, field_name: str, tensor: TensorInfo, array: np.ndarray, label: str) -> None:
    """An integer model input gets whole numbers in range: onnxruntime would otherwise see the data cast
    (truncated or wrapped around) without a word."""
    dtype = np.dtype(tensor.dtype)
    if dtype.kind not in "iu":
        return
    problem = integer_problem(array, dtype)
    if problem:
        raise SpecError(spec.path, field_name, f"the model input '{tensor.name}' is {dtype.name}, and sample "
                                               f"'{label}' ({array.dtype.name}) {problem}",
                        f"give whole numbers within {dtype.name}'s range (a `dtype:` of its own must be an integer type)")


def _check_presets(spec: Spec, model: ModelInfo, presets) -> None:
    for set_index, shapes in enumerate(presets):
        if len(shapes) != len(model.inputs):
            raise SpecError(spec.path, f"convert.dynamic_input[{set_index}]",
                            f"gives {len(shapes)} shapes but the model has {len(model.inputs)} inputs",
                            "give one shape per model input in every preset set")
        for tensor, shape in zip(model.inputs, shapes):
            if not _shape_matches(tensor.shape, shape):
                raise SpecError(spec.path, f"convert.dynamic_input[{set_index}]",
                                f"shape {list(shape)} does not fit input '{tensor.name}' {tensor.shape_text()}")


def _shape_matches(model_shape, shape) -> bool:
    return len(model_shape) == len(shape) and all(
        not isinstance(m, int) or m == s for m, s in zip(model_shape, shape))


def _random_samples(spec, field_name, tensor: TensorInfo, index, source: RandomInput, presets) -> _Samples:
    dtype = np.dtype(source.dtype or tensor.dtype)
    if source.shape is not None:
        shapes = [tuple(source.shape)]
    elif tensor.is_static:
        shapes = [tuple(int(d) for d in tensor.shape)]  # static: every size a number
    elif presets is not None:
        shapes = [tuple(preset[index]) for preset in presets]
    else:
        raise SpecError(spec.path, field_name, f"the model input '{tensor.name}' has a dynamic shape {tensor.shape_text()}",
                        "give `shape:` for this input or `convert.dynamic_input` presets")
    low, high = source.random
    if "random" not in source.model_fields_set and dtype.kind in "iu":
        high = 100.0 if dtype.kind == "i" else 255.0  # unset range (an input left out) on integer inputs
    if dtype.kind in "iu":
        _check_integer_range(spec, field_name, dtype, low, high)
    rng = np.random.default_rng(source.seed)
    arrays, labels = [], []
    for shape in shapes:
        for i in range(source.count):
            if dtype.kind in "iu":
                array = rng.integers(int(low), int(high), size=shape, endpoint=True).astype(dtype)
            elif dtype.kind == "b":
                array = rng.integers(0, 1, size=shape, endpoint=True).astype(bool)
            else:
                array = rng.uniform(low, high, size=shape).astype(dtype)
            arrays.append(array)
            shape_text = "x".join(str(d) for d in shape)
            labels.append(f"random {shape_text} #{i}" if len(shapes) > 1 else f"random #{i}")
    layout = source.layout or ("nchw" if len(shapes[0]) == 4 else None)
    return _Samples(arrays, labels, layout)


def _check_integer_range(spec, field_name, dtype: np.dtype, low: float, high: float) -> None:
    problem = integer_problem(np.array([low, high]), dtype)
    if problem:
        raise SpecError(spec.path, f"{field_name}.random", f"[{low:g}, {high:g}] for {dtype.name} data {problem}",
                        f"give whole numbers within {dtype.name}'s range, e.g. [0, 10]")


def _image_samples(spec, field_name, tensor: TensorInfo, source: ImageInput, folder: Optional[Path]) -> _Samples:
    paths = expand_paths(spec, f"{field_name}.images", source.images)
    if source.limit:
        paths = paths[: source.limit]
    arrays = image_arrays(spec, field_name, tensor, source, paths, folder)
    return _Samples(arrays, [Path(p).name for p in paths], source.layout, paths)


def image_arrays(spec, field_name, tensor: TensorInfo, source: ImageInput, paths: List[str],
                 folder: Optional[Path]) -> List[np.ndarray]:
    """The images at `paths` preprocessed as `source` says (size or letterbox, colour, layout, dtype) for
    the model input `tensor`, one (1, ...) array each; kept in `folder` by their bytes and settings."""
    if len(tensor.shape) != 4:
        raise SpecError(spec.path, field_name, f"images need a 4-D model input, '{tensor.name}' is {tensor.shape_text()}",
                        "use `file:` or `random:` for this input")
    size = source.size or source.letterbox
    if size is None:
        height, width = tensor.shape[2], tensor.shape[3]
        if not (isinstance(height, int) and isinstance(width, int)):
            raise SpecError(spec.path, field_name, f"the model input '{tensor.name}' has no fixed height and width",
                            "give `size: [H, W]` or `letterbox: N`")
        size = (height, width)
    settings = {"size": size, "letterbox": source.letterbox, "pad": source.pad, "color": source.color,
                "layout": source.layout, "dtype": source.dtype}
    stored = decoded_images.key(paths, settings) if folder is not None else None
    arrays = decoded_images.load(folder, stored, len(paths)) if stored else None
    if arrays is None:
        arrays = _decode_images(spec, field_name, source, paths, size)
        if stored:
            decoded_images.store(folder, stored, arrays)
    return arrays


def _decode_images(spec, field_name: str, source: ImageInput, paths: List[str], size) -> List[np.ndarray]:
    from PIL import Image, UnidentifiedImageError

    arrays = []
    for path in paths:
        try:
            with Image.open(path) as image:
                rgb = image.convert("RGB")
        except (OSError, UnidentifiedImageError) as exc:
            raise SpecError(spec.path, f"{field_name}.images", f"cannot read image {path}: {exc}",
                            "remove it or fix the glob") from None
        pixels = _letterbox(rgb, size, source.pad) if source.letterbox else np.asarray(
            rgb.resize((size[1], size[0]), Image.BILINEAR))  # type: ignore[attr-defined]  # see _letterbox
        if source.color == "bgr":
            pixels = pixels[..., ::-1]
        if source.layout == "nchw":
            pixels = pixels.transpose(2, 0, 1)
        arrays.append(np.ascontiguousarray(pixels[None]).astype(source.dtype))
    return arrays


def _letterbox(image, size: Tuple[int, int], pad: int) -> np.ndarray:
    """Scale to fit (height, width) keeping the aspect ratio; pad the rest, centred."""
    from PIL import Image

    height, width = size
    scale = min(height / image.height, width / image.width)
    new_w, new_h = max(1, round(image.width * scale)), max(1, round(image.height * scale))
    canvas = Image.new("RGB", (width, height), (pad, pad, pad))
    # Pillow sets Image.BILINEAR in a loop over Image.Resampling (9.1 and later), which mypy cannot see
    canvas.paste(image.resize((new_w, new_h), Image.BILINEAR),  # type: ignore[attr-defined]
                 ((width - new_w) // 2, (height - new_h) // 2))
    return np.asarray(canvas)


def _file_samples(spec, field_name, tensor: TensorInfo, source: FileInput) -> _Samples:
    path = spec.resolve(source.file)
    if not path.is_file():
        raise SpecError(spec.path, f"{field_name}.file", f"file not found: {path}",
                        "paths in a spec are relative to the spec file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise SpecError(spec.path, f"{field_name}.file", f"cannot read {path} as .npy/.npz: {exc}") from None
    if isinstance(loaded, np.lib.npyio.NpzFile):
        key = source.key or tensor.name
        if key not in loaded.files:
            raise SpecError(spec.path, f"{field_name}.key", f"{path.name} has no array '{key}'",
                            f"its arrays are: {', '.join(loaded.files)}")
        array = loaded[key]
    else:
        array = loaded
    dtype = np.dtype(source.dtype or tensor.dtype)
    problem = integer_problem(array, dtype) if dtype.kind in "iu" else None
    if problem:
        raise SpecError(spec.path, f"{field_name}.file", f"{path.name} ({array.dtype.name}) {problem}, and would be "
                                                         f"cast to {dtype.name} for the model input '{tensor.name}'",
                        f"store whole numbers within {dtype.name}'s range")
    rank = len(tensor.shape)
    if array.ndim == rank + 1:
        arrays = [np.ascontiguousarray(a).astype(dtype) for a in array]
    elif array.ndim == rank:
        arrays = [array.astype(dtype)]
    else:
        raise SpecError(spec.path, f"{field_name}.file",
                        f"{path.name} holds shape {array.shape}, the model input '{tensor.name}' is {tensor.shape_text()}",
                        "store one sample with the input's shape, or N samples stacked on a new first axis")
    layout = source.layout or ("nchw" if rank == 4 else None)
    return _Samples(arrays, [f"{path.name}[{i}]" for i in range(len(arrays))], layout)


def expand_paths(spec: Spec, field_name: str, patterns) -> List[str]:
    patterns = [patterns] if isinstance(patterns, str) else list(patterns)
    paths: List[str] = []
    for pattern in patterns:
        full = str(spec.resolve(pattern)) if not Path(pattern).is_absolute() else pattern
        matches = sorted(glob.glob(full))
        if not matches:
            raise SpecError(spec.path, field_name, f"no files match '{pattern}' (looked in {spec.base_dir})",
                            "paths in a spec are relative to the spec file")
        paths.extend(matches)
    return paths


def _expected_shape(tensor: TensorInfo, layout: Optional[str]) -> Sequence:
    shape = tensor.shape
    if layout == "nhwc" and len(shape) == 4:
        return (shape[0], shape[2], shape[3], shape[1])
    return shape


def _check_shape(spec, field_name, tensor: TensorInfo, array: np.ndarray, layout, presets, index) -> None:
    expected = _expected_shape(tensor, layout)
    if not _shape_matches(expected, array.shape):
        hint = "resize the data or set `size:`/`letterbox:`" if layout == "nhwc" else "give data of the model's shape"
        raise SpecError(spec.path, field_name,
                        f"gives shape {tuple(array.shape)} ({layout or 'as is'}) but the model input '{tensor.name}' "
                        f"is {tensor.shape_text()} (nchw)" if layout else
                        f"gives shape {tuple(array.shape)} but the model input '{tensor.name}' is {tensor.shape_text()}",
                        hint)
    if presets is not None and not tensor.is_static:
        model_order = array.shape if layout != "nhwc" else (array.shape[0], array.shape[3], *array.shape[1:3])
        if not any(list(model_order) == list(preset[index]) for preset in presets):
            raise SpecError(spec.path, field_name, f"shape {tuple(model_order)} is not one of the convert.dynamic_input presets",
                            "add it to the presets or change the data")


def _zip_samples(spec: Spec, model: ModelInfo, per_input: List[_Samples]) -> InputSet:
    counts = {len(s.arrays) for s in per_input}
    count = max(counts)
    if counts - {1, count}:
        detail = ", ".join(f"'{t.name}' gives {len(s.arrays)}" for t, s in zip(model.inputs, per_input))
        raise SpecError(spec.path, "inputs", f"the inputs give different numbers of samples ({detail})",
                        "give every input the same number of samples, or one that is shared")
    samples, labels = [], []
    for i in range(count):
        picked = [s.arrays[i if len(s.arrays) > 1 else 0] for s in per_input]
        names = [s.labels[i if len(s.labels) > 1 else 0] for s in per_input]
        samples.append(picked)
        labels.append(" + ".join(dict.fromkeys(names)))
    layouts = [s.layout if len(t.shape) == 4 else None for t, s in zip(model.inputs, per_input)]
    images = next((s.paths for s in per_input if s.paths), None)
    image_paths: List[Optional[str]] = ([images[i if len(images) > 1 else 0] for i in range(count)] if images
                                        else [None] * count)
    return InputSet([t.name for t in model.inputs], layouts, samples, labels, image_paths)
