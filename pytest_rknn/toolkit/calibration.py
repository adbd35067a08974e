"""The calibration list for an int8 build, written as the toolkit wants it.

By default (`convert.quantize.preprocess: true`) the calibration images of an input that the spec
feeds with images get that input's own preprocessing (size or letterbox, colour, layout) and go to
the toolkit as arrays, so the build is calibrated on the pixels it is tested on. The toolkit's own
loading would stretch them to the input size. A dataset `.npy` must be NCHW, as the ONNX input is,
whatever the data format of inference: rknn-toolkit2 2.3.2 and 2.5.0 refuse (1, H, W, 3) with
"expect 'nchw'", and an NCHW array of an image's pixels calibrates bit for bit like the image file.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import List, Optional

import numpy as np

from ..errors import SpecError
from ..inputs import expand_paths, image_arrays
from ..jobdir import CALIBRATION
from ..onnx_model import ModelInfo
from ..spec import ImageInput, QuantizeSpec, Spec

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp")


def write_dataset(spec: Spec, model: ModelInfo, job_dir: Path, images_folder: Optional[Path] = None) -> Optional[str]:
    """The calibration list as the toolkit wants it: one sample a line, absolute paths,
    several space-separated paths for a multi-input model. `images_folder`: where decoded images are
    kept (the result cache's), or None."""
    quantize = spec.convert.quantize
    if not isinstance(quantize, QuantizeSpec):
        return None
    dataset = quantize.dataset
    if isinstance(dataset, dict):
        names = [t.name for t in model.inputs]
        for name in dataset:
            if name not in names:
                raise SpecError(spec.path, f"convert.quantize.dataset.{name}", f"the model has no input '{name}'",
                                f"its inputs are: {', '.join(names)}")
        missing = [n for n in names if n not in dataset]
        if missing:
            raise SpecError(spec.path, "convert.quantize.dataset", f"no calibration data for input '{missing[0]}'",
                            "give a glob or list for every model input")
        columns = [expand_paths(spec, f"convert.quantize.dataset.{n}", dataset[n]) for n in names]
        if len({len(c) for c in columns}) != 1:
            counts = ", ".join(f"'{n}' {len(c)}" for n, c in zip(names, columns))
            raise SpecError(spec.path, "convert.quantize.dataset", f"inputs have different numbers of files ({counts})",
                            "give every input the same number of calibration files")
        rows = [list(row) for row in zip(*columns)]
    else:
        if len(model.inputs) > 1:
            raise SpecError(spec.path, "convert.quantize.dataset", "the model has several inputs",
                            "give one glob or list per input: `dataset: {input_name: 'calib/*.npy', ...}`")
        rows = [[p] for p in expand_paths(spec, "convert.quantize.dataset", dataset)]
    for row in rows:
        for path in row:
            if " " in path:
                raise SpecError(spec.path, "convert.quantize.dataset", f"the toolkit cannot read a path with a space: "
                                                                       f"{path}", "rename the file or its folder")
    shutil.rmtree(job_dir / CALIBRATION, ignore_errors=True)
    if quantize.preprocess:
        rows = _preprocessed(spec, model, rows, job_dir / CALIBRATION, images_folder)
    path = job_dir / "dataset.txt"
    path.write_text("".join(" ".join(row) + "\n" for row in rows))
    return str(path)


def _preprocessed(spec: Spec, model: ModelInfo, rows: List[List[str]], folder: Path,
                  images_folder: Optional[Path]) -> List[List[str]]:
    """The rows with each image column of an image input replaced by NCHW arrays of the images,
    preprocessed like that input."""
    columns = [list(column) for column in zip(*rows)]
    for index, tensor in enumerate(model.inputs):
        source = spec.inputs.get(tensor.name)
        if not isinstance(source, ImageInput) or not all(p.lower().endswith(IMAGE_SUFFIXES) for p in columns[index]):
            continue
        field_name = "convert.quantize.dataset" + (f".{tensor.name}" if len(model.inputs) > 1 else "")
        arrays = image_arrays(spec, field_name, tensor, source, columns[index], images_folder)
        folder.mkdir(parents=True, exist_ok=True)
        for row, array in enumerate(arrays):
            target = folder / f"{row:05d}_{index}.npy"
            np.save(target, array.transpose(0, 3, 1, 2) if source.layout == "nhwc" else array)
            columns[index][row] = str(target)
    return [list(row) for row in zip(*columns)]
