"""The calibration list for an int8 build, written as the toolkit wants it."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

from ..errors import SpecError
from ..inputs import expand_paths
from ..onnx_model import ModelInfo
from ..spec import QuantizeSpec, Spec


def write_dataset(spec: Spec, model: ModelInfo, job_dir: Path) -> Optional[str]:
    """The calibration list as the toolkit wants it: one sample a line, absolute paths,
    several space-separated paths for a multi-input model."""
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
    path = job_dir / "dataset.txt"
    path.write_text("".join(" ".join(row) + "\n" for row in rows))
    return str(path)
