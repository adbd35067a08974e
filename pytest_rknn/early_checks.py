"""What can be checked of a spec before a worker starts: its fields against the ONNX graph (output
names, op tensors, input channels), and its `versions:` overrides against the versions in use.

Each problem is one SPEC error that names the spec file and field. Without these checks the
toolkit reports most of them as BUILD after a worker has started, and some never: a cosine
threshold for an output that does not exist just never applies.
"""

from __future__ import annotations

import difflib
import warnings
from typing import Iterable, List, Optional, Tuple

import numpy as np

from .errors import RknnWarning, SpecError
from .onnx_model import ModelInfo, TensorInfo
from .spec import Spec
from .toolkit.envs import KNOWN_VERSIONS


def check_before_build(spec: Spec, model: ModelInfo, versions_in_run: Iterable[str],
                       compare_to: Optional[str] = None) -> None:
    """`spec` is one version's spec; `versions_in_run` and `compare_to` are the versions this
    session builds, so any other version's overrides are unused."""
    check_against_model(spec, model)
    in_use = {v for v in (*versions_in_run, compare_to, spec.version) if v is not None}
    check_version_overrides(spec, sorted(in_use))


def check_against_model(spec: Spec, model: ModelInfo) -> None:
    _check_output_thresholds(spec, model)
    _check_slices(spec, model)
    _check_op_target(spec, model)
    for key in ("mean_values", "std_values"):
        _check_normalisation(spec, model, key)


# ---------------------------------------------------------------- against the graph


def _check_output_thresholds(spec: Spec, model: ModelInfo) -> None:
    outputs = [t.name for t in model.outputs]
    for check_name in ("cosine", "vs_sim_cosine", "max_abs"):
        check = getattr(spec.checks, check_name, None)
        for name in (check.outputs if check else {}):
            if name not in outputs:
                raise SpecError(spec.path, _field(spec, "checks", check_name, "outputs", name),
                                f"the model has no output '{name}', so this threshold would never apply",
                                f"{_did_you_mean(name, outputs)}its outputs are: {', '.join(outputs)}")


def _check_slices(spec: Spec, model: ModelInfo) -> None:
    """checks.cosine.slices: an output of the model, an axis it has, a range inside that axis."""
    outputs = {t.name: t for t in model.outputs}
    for index, part in enumerate(spec.checks.cosine.slices):
        field = f"{_field(spec, 'checks', 'cosine', 'slices')}[{index}]"
        tensor = outputs.get(part.output)
        if tensor is None:
            raise SpecError(spec.path, f"{field}.output", f"the model has no output '{part.output}'",
                            f"{_did_you_mean(part.output, outputs)}its outputs are: {', '.join(outputs)}")
        rank = len(tensor.shape)
        if not -rank <= part.axis < rank:
            raise SpecError(spec.path, f"{field}.axis", f"output '{part.output}' {tensor.shape_text()} has no axis "
                                                        f"{part.axis}", f"use an axis from {-rank} to {rank - 1}")
        size = tensor.shape[part.axis]
        if not isinstance(size, int):
            continue  # a dynamic axis: its length is known at inference only
        stop = size if part.stop is None else part.stop
        if stop > size:
            raise SpecError(spec.path, f"{field}.stop", f"{stop} is past the end of axis {part.axis} of output "
                                                        f"'{part.output}' {tensor.shape_text()}", f"give stop <= {size}")
        if not 0 <= part.start < stop:
            raise SpecError(spec.path, f"{field}.start", f"{part.start}:{stop} is an empty or negative range",
                            f"give 0 <= start < stop <= {size}")
    names = [part.name for part in spec.checks.cosine.slices]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise SpecError(spec.path, _field(spec, "checks", "cosine", "slices"), f"two slices are named '{twice[0]}'",
                        "give every slice a name of its own")


def _check_op_target(spec: Spec, model: ModelInfo) -> None:
    """rknn.config's op_target takes an op's output tensor (`c: cpu`) or an op type (`AveragePool: cpu`)."""
    known = model.op_outputs | model.op_types
    for key, target in (spec.convert.op_target or {}).items():
        if key not in known:
            problem, fix = _op_target_problem(key, target, model)
            raise SpecError(spec.path, _field(spec, "convert", "op_target", key), problem, fix)


def _op_target_problem(key: str, target: str, model: ModelInfo) -> Tuple[str, str]:
    fix = "name an op's output tensor or an op type of the model"
    if model.input(key) is not None:
        return f"'{key}' is a model input, not the output of an op", fix
    named = next((op for op in model.ops if op.name == key and op.outputs), None)
    if named is not None:
        return (f"'{key}' is the name of an op, and op_target wants its output tensor",
                f"write `{named.outputs[0]}: {target}`")
    known = model.op_outputs | model.op_types
    return f"the model has no op output tensor or op type '{key}'", _did_you_mean(key, known) + fix


NEUTRAL = {"mean_values": 0, "std_values": 1}  # the values that leave an input as it is


def _check_normalisation(spec: Spec, model: ModelInfo, key: str) -> None:
    """At most one list per model input (in order), one value per channel, neutral values for an
    integer input."""
    lists = getattr(spec.convert, key)
    if lists is None:
        return
    field = _field(spec, "convert", key)
    _check_list_count(spec, model, field, lists)
    for index, (values, tensor) in enumerate(zip(lists, model.inputs)):
        _check_one_value_per_channel(spec, f"{field}[{index}]", tensor, values)
        _check_neutral_for_an_integer_input(spec, f"{field}[{index}]", tensor, values, NEUTRAL[key])


def _check_list_count(spec: Spec, model: ModelInfo, field: str, lists) -> None:
    if len(lists) > len(model.inputs):
        names = ", ".join(t.name for t in model.inputs)
        plural = "s" if len(model.inputs) > 1 else ""
        raise SpecError(spec.path, field, f"gives {len(lists)} lists, but the model has {len(model.inputs)} "
                                          f"input{plural} ({names}); the toolkit would ignore the rest",
                        "give one list per model input, in model order")


def _check_one_value_per_channel(spec: Spec, field: str, tensor: TensorInfo, values) -> None:
    """The toolkit reads the channels from dimension 1 of every input, whatever its rank."""
    channels = _channels(tensor)
    if channels is None or len(values) == channels:
        return
    example = ", ".join(["%g" % values[0]] * min(channels, 4)) + (", ..." if channels > 4 else "")
    raise SpecError(spec.path, field, f"gives {len(values)} value{'s' if len(values) != 1 else ''}, but input "
                                      f"'{tensor.name}' {tensor.shape_text()} has {channels} channels (its dimension 1)",
                    f"give one value per channel, e.g. [{example}]")


def _check_neutral_for_an_integer_input(spec: Spec, field: str, tensor: TensorInfo, values, neutral: float) -> None:
    """Seen with rknn-toolkit2 2.5.0 on the int64 input of fixtures/models/two_input.onnx: a mean of 10
    changes no output. The reference does not normalise integer inputs either."""
    if np.dtype(tensor.dtype).kind == "f" or all(v == neutral for v in values):
        return
    raise SpecError(spec.path, field, f"input '{tensor.name}' is {tensor.dtype}, and integer inputs are not "
                                      f"normalised (neither by the NPU nor by the reference), so these values would "
                                      f"do nothing", f"write {neutral} for every channel of it")


def _channels(tensor: TensorInfo) -> Optional[int]:
    if len(tensor.shape) < 2 or not isinstance(tensor.shape[1], int):
        return None
    return tensor.shape[1]


# ---------------------------------------------------------------- versions: overrides


def check_version_overrides(spec: Spec, versions_in_use: List[str]) -> None:
    """An override for a version nobody knows is a mistake (SPEC); one for a known version that
    this run does not build does nothing here, which is worth a warning."""
    base = spec.base or spec
    for version in base.raw.get("versions", {}):
        if version in versions_in_use:
            continue
        in_use = ", ".join(versions_in_use)
        if version not in KNOWN_VERSIONS:
            raise SpecError(base.path, f"versions.{version}",
                            f"'{version}' is neither a rknn-toolkit2 version that pytest-rknn knows "
                            f"({', '.join(KNOWN_VERSIONS)}) nor one that this run tests ({in_use})",
                            f"{_did_you_mean(version, KNOWN_VERSIONS)}fix the version, or test it with "
                            f"--rknn-toolkit={version}")
        warnings.warn(RknnWarning(f"{base.path}: versions.{version}: this run does not test rknn-toolkit2 {version} "
                                  f"(it tests {in_use}), so these overrides do nothing here"))


# ---------------------------------------------------------------- helpers


def _field(spec: Spec, *keys: str) -> str:
    """The field's name as the user wrote it: under `versions.V.` when that version's overrides set it."""
    base = spec.base or spec
    overrides = base.raw.get("versions", {}).get(spec.version) if spec.version else None
    node = overrides
    for key in keys:
        if not isinstance(node, dict) or key not in node:
            return ".".join(keys)
        node = node[key]
    return f"versions.{spec.version}." + ".".join(keys)


def _did_you_mean(name: str, candidates: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, sorted(candidates), n=1)
    return f"did you mean `{close[0]}`? " if close else ""
