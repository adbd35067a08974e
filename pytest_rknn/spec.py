"""The model spec (`*.rknn.yaml`): schema, validation messages, per-version overrides.

A spec names the file and field in every error, says what is wrong and how to fix it.
Paths in a spec are relative to the spec file.
"""

from __future__ import annotations

import copy
import difflib
import hashlib
import json
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Dict, List, Literal, Optional, Tuple, Type, Union, get_args

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from .errors import SpecError
from .toolkit.envs import KNOWN_VERSIONS, is_version

SPEC_SUFFIX = ".rknn.yaml"
DEFAULT_TARGET = "rk3588"
# What rknn.config(target_platform=...) accepts, in any case (checked against rknn-toolkit2 2.3.2 and
# 2.5.0; rv1109/rv1126/rk1808/rk3399pro belong to the older rknn-toolkit and are refused).
TARGETS = ("rk2118", "rk3562", "rk3566", "rk3568", "rk3576", "rk3588", "rk3588s",
           "rv1103", "rv1103b", "rv1106", "rv1106b", "rv1126b")
OP_TARGETS = ("npu", "cpu", "gpu", "auto")  # rknn.config's op_target values, in any case
QuantizedDtype = Literal["w8a8", "w8a16", "w16a16i", "w16a16i_dfp", "w4a16"]  # 2.3.2 and 2.5.0 together
QUANTIZED_DTYPES = get_args(QuantizedDtype)
# rknn.config keys that only an int8 build uses: on a float build they would silently do nothing.
QUANTIZE_ONLY = ("quantized_dtype", "quantized_algorithm", "quantized_method", "quantized_hybrid_level",
                 "quant_img_RGB2BGR", "auto_hybrid_cos_thresh", "auto_hybrid_euc_thresh")
DTYPES = ("uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "bool")
Dtype = Literal["uint8", "int8", "int16", "int32", "int64", "float16", "float32", "float64", "bool"]
Layout = Literal["nchw", "nhwc"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _pair(value):
    """`640` -> [640, 640]; `[480, 640]` stays (height, width)."""
    if isinstance(value, int) and not isinstance(value, bool):
        return [value, value]
    return value


# ---------------------------------------------------------------- inputs


class FileInput(_Strict):
    """`{file: x.npy}` or `{file: data.npz, key: x}`: one sample, or N stacked on a new first axis."""

    file: str = Field(description="a `.npy` file, or a `.npz` with `key`; one sample, or N stacked on a new first axis")
    key: Optional[str] = Field(None, description="the array in a `.npz` (null: the input's name)")
    layout: Optional[Layout] = Field(None, description="of a 4-D array (null: the model's, NCHW)")
    dtype: Optional[Dtype] = Field(None, description="cast to this dtype (null: the model input's)")


class ImageInput(_Strict):
    """`{images: val/*.jpg, letterbox: 640, color: rgb, layout: nhwc}`: one sample per image."""

    images: Union[str, List[str]] = Field(description="a glob or a list of globs or files (each glob's matches "
                                                      "sorted), one sample per image")
    size: Optional[Tuple[int, int]] = Field(None, description="stretch to `[H, W]` (or `N`); null: the model "
                                                              "input's size")
    letterbox: Optional[Tuple[int, int]] = Field(None, description="resize keeping the aspect ratio and pad to "
                                                                   "`[H, W]` (or `N`); not with `size`")
    pad: int = Field(114, ge=0, le=255, description="the letterbox's padding value (needs `letterbox`)")
    color: Literal["rgb", "bgr"] = Field("rgb", description="channel order of the arrays")
    layout: Layout = Field("nhwc", description="nhwc as an app on the board feeds them, or nchw")
    dtype: Literal["uint8", "float32"] = Field("uint8", description="uint8 0..255, or float32 of the same values")
    limit: Optional[int] = Field(None, ge=1, description="use only the first N images (null: all)")

    _pairs = field_validator("size", "letterbox", mode="before")(_pair)


class RandomInput(_Strict):
    """`{random: [0, 255], seed: 0, count: 2, dtype: float32, shape: [1, 3, 32, 32]}`."""

    random: Tuple[float, float] = Field((0.0, 1.0), description="uniform `[low, high]` (`random: true` or null: the "
                                        "default); integer inputs include both ends, and an input left out of `inputs` "
                                        "gets 0..100 (signed) or 0..255 (unsigned) when it is an integer input")
    seed: int = Field(0, description="numpy's `default_rng` seed")
    count: int = Field(1, ge=1, description="samples (per preset shape of a dynamic model)")
    dtype: Optional[Dtype] = Field(None, description="null: the model input's")
    shape: Optional[List[int]] = Field(None, description="null: the model input's (needed for a dynamic input "
                                                         "without presets)")
    layout: Optional[Layout] = Field(None, description="of a 4-D shape (null: nchw)")

    @field_validator("random", mode="before")
    @classmethod
    def _default_range(cls, value):
        return (0.0, 1.0) if value is True or value is None else value


INPUT_KINDS: Dict[str, Type[InputSource]] = {"file": FileInput, "images": ImageInput, "random": RandomInput}
InputSource = Union[FileInput, ImageInput, RandomInput]


# ---------------------------------------------------------------- convert


class QuantizeSpec(_Strict):
    """Calibration for an int8 build: a glob, a list, or one glob/list per input. `preprocess`: the
    images go through the same preprocessing as the input they feed (size or letterbox, colour,
    layout) and reach the toolkit as arrays; false hands the image files to the toolkit's own loading."""

    dataset: Union[str, List[str], Dict[str, Union[str, List[str]]]] = Field(
        description="calibration files: a glob, a list, or one glob/list per input; written as the toolkit's "
                    "`dataset.txt` with absolute paths")
    preprocess: bool = Field(True, description="true: the calibration images of an `images:` input get that input's "
                                               "size or letterbox, colour and layout and reach the toolkit as NCHW "
                                               "`.npy` arrays; false: the toolkit loads the image files itself "
                                               "(stretching them to the input size). Other files always go as they are")


class ConvertSpec(BaseModel):
    """Keys for `rknn.config` plus `quantize`. Keys not named here are passed to
    `rknn.config` as they are; the worker checks them against the installed
    toolkit's signature, so a misspelt key is an error there."""

    model_config = ConfigDict(extra="allow")

    mean_values: Optional[List[List[float]]] = Field(None, description="one list per input, one value per channel "
                                                                       "(a flat list: the only input); null: none")
    std_values: Optional[List[List[float]]] = Field(None, description="as `mean_values`; the NPU computes "
                                                                      "(x - mean) / std")
    quantize: Union[bool, QuantizeSpec] = Field(False, description="false: a float (fp16) build; "
                                                                   "`{dataset: ...}`: an int8 build")
    quantized_dtype: Optional[QuantizedDtype] = Field(
        None, description="int8 builds only; null: the toolkit's default")
    quantized_algorithm: Optional[Literal["normal", "mmse", "kl_divergence", "gdq"]] = Field(
        None, description="int8 builds only; null: the toolkit's default")
    quantized_method: Optional[str] = Field(None, description="int8 builds only: channel, layer, or group32 ... "
                                                              "group256 (2.3.2 and later); null: the toolkit's default")
    optimization_level: Optional[int] = Field(None, ge=0, le=3, description="null: the toolkit's default")
    op_target: Optional[Dict[str, str]] = Field(None, description="an op's output tensor or an op type of the model: "
                                                                  "npu, cpu, gpu or auto")
    dynamic_input: Optional[List[List[List[int]]]] = Field(None, description="preset shape sets, one shape per "
                                                                             "input; every preset is run")

    @field_validator("mean_values", "std_values", mode="before")
    @classmethod
    def _one_list_per_input(cls, value):
        # `[0, 0, 0]` is the common single-input shorthand for `[[0, 0, 0]]`.
        if isinstance(value, list) and value and all(isinstance(v, (int, float)) for v in value):
            return [value]
        return value

    @field_validator("quantized_method")
    @classmethod
    def _known_method(cls, value):
        groups = [f"group{size}" for size in range(32, 257, 32)]
        if value is not None and value not in ("channel", "layer", *groups):
            raise ValueError("should be 'channel', 'layer' or 'groupN' with N a multiple of 32 from 32 to 256")
        return value

    def config_kwargs(self) -> Dict[str, Any]:
        """The arguments for `rknn.config`, without our own `quantize`."""
        return self.model_dump(exclude={"quantize"}, exclude_none=True)


# ---------------------------------------------------------------- checks


class SliceCheck(_Strict):
    """A part of one output, checked on its own: `output[..., start:stop, ...]` along `axis`."""

    name: str = Field(description="the slice's name in messages and the metric `slice_cosine.NAME`")
    output: str = Field(description="an output of the model")
    axis: int = Field(-1, description="the axis to slice")
    start: int = Field(0, description="first index along `axis`")
    stop: Optional[int] = Field(None, description="index after the last (null: the end of the axis)")
    min: float = Field(0.99, ge=-1.0, le=1.0, description="lowest worst-sample cosine of the slice")


class CosineCheck(_Strict):
    """The cosine of each output against onnxruntime's, worst sample per output."""

    min: float = Field(0.99, ge=-1.0, le=1.0, description="lowest cosine for every output")
    outputs: Dict[str, float] = Field({}, description="per output name, instead of `min`")
    slices: List[SliceCheck] = Field([], description="parts of outputs checked on their own (below)")


class MaxAbsCheck(_Strict):
    """The largest absolute difference from onnxruntime's output, per output."""

    max: float = Field(..., ge=0.0, description="highest allowed for every output")
    outputs: Dict[str, float] = Field({}, description="per output name, instead of `max`")


def _threshold_shorthand(key):
    def expand(value):
        return {key: value} if isinstance(value, (int, float)) and not isinstance(value, bool) else value

    return expand


class YoloV5Check(_Strict):
    """Judge a YOLOv5 detector by what it detects, against onnxruntime in the same run
    and, with `labels`, against ground truth."""

    layout: Literal["auto", "heads", "single"] = Field(
        "auto", description="heads: three (1, 3*(5+C), H, W) outputs, sigmoid inside (rknn_model_zoo); single: one "
                            "(1, N, 5+C), Detect inside (ultralytics export); auto: from the outputs' shapes")
    anchors: Optional[List[List[float]]] = Field(None, description="per head, `[w, h, ...]` (null: YOLOv5's)")
    strides: Optional[List[int]] = Field(None, description="per head (null: 8, 16, 32)")
    conf_threshold: float = Field(0.25, ge=0.0, le=1.0, description="lowest score of a detection")
    iou_threshold: float = Field(0.45, ge=0.0, le=1.0, description="NMS overlap, per class")
    max_detections: int = Field(300, ge=1, description="per image, after NMS")
    count_tolerance: Optional[int] = Field(1, ge=0, description="per image, |RKNN detections - onnxruntime's| <= "
                                                                "this; null switches the count check off")
    labels: Optional[str] = Field(None, description="ground truth: a COCO json, or a folder of YOLO txt files "
                                                    "(`<stem>.txt`); null: onnxruntime's detections are the truth")
    map50_ratio: Optional[float] = Field(None, gt=0.0, description="RKNN mAP@0.5 >= ratio x onnxruntime's "
                                                                   "(without labels: the agreement mAP); null: "
                                                                   "not checked")
    max_map50_drop: Optional[float] = Field(None, ge=0.0, description="onnxruntime's mAP@0.5 - RKNN's <= drop "
                                                                      "(without labels: 1 - the agreement mAP); "
                                                                      "null: not checked")
    min_agreement_map50: Optional[float] = Field(None, ge=0.0, le=1.0,
                                                 description="mAP@0.5 of RKNN's detections against onnxruntime's "
                                                             ">= this; null: not checked")
    overlays: int = Field(3, ge=0, description="side-by-side pictures of the worst images (0: none)")


class VsSimCosineCheck(_Strict):
    """Board items: the board's outputs against the simulator's, which run the same arithmetic
    (a healthy board agrees to 0.99995 or better). A board with noise at 5% of an output's spread
    scores 0.9985-0.9995, which the conversion's looser `cosine` gate lets through."""

    min: float = Field(0.9999, ge=-1.0, le=1.0, description="lowest board-vs-simulator cosine for every output")
    outputs: Dict[str, float] = Field({}, description="per output name, instead of `min`")


class PlacementCheck(_Strict):
    """Where the build puts its layers (simulator items, from the toolkit's layer table): at most
    `cpu_ops` layers on the CPU, not counting layers whose op type is in `allow_cpu`."""

    cpu_ops: int = Field(0, ge=0, description="most layers allowed on the CPU")
    allow_cpu: List[str] = Field([], description="op types that may run on the CPU, not counted")


class LatencyCheck(_Strict):
    """Board items: inference() timed on the board, after one warm-up run; `runs` timed runs in all
    (the samples, then again from the first), `max_ms` the highest median allowed (null: none)."""

    max_ms: Optional[float] = Field(None, gt=0.0, description="highest median inference() time in ms "
                                                              "(PERFORMANCE); null: measured, not checked")
    runs: int = Field(10, ge=1, le=10000, description="timed runs after one warm-up: the samples, then again "
                                                      "from the first")


class ChecksSpec(_Strict):
    """What an item must meet."""

    cosine: CosineCheck = Field(CosineCheck(), description="against onnxruntime; `cosine: 0.99` is short for "
                                                           "`{min: 0.99}`")
    vs_sim_cosine: Optional[VsSimCosineCheck] = Field(VsSimCosineCheck(),
                                                      description="board items against the simulator; "
                                                                  "`vs_sim_cosine: 0.9999` is short for "
                                                                  "`{min: 0.9999}`; null: not checked")
    max_abs: Optional[MaxAbsCheck] = Field(None, description="`max_abs: 0.5` is short for `{max: 0.5}`; "
                                                             "null: not checked")
    yolov5: Optional[YoloV5Check] = Field(None, description="detections of a YOLOv5 detector; null: not checked")
    placement: Optional[PlacementCheck] = Field(None, description="`placement: 0` is short for `{cpu_ops: 0}`; "
                                                                  "null: the CPU layers are reported, not checked")
    latency: LatencyCheck = Field(LatencyCheck(), description="board items; `latency: 20` is short for "
                                                              "`{max_ms: 20}`")

    _cos = field_validator("cosine", mode="before")(_threshold_shorthand("min"))
    _vs_sim = field_validator("vs_sim_cosine", mode="before")(_threshold_shorthand("min"))
    _abs = field_validator("max_abs", mode="before")(_threshold_shorthand("max"))
    _cpu = field_validator("placement", mode="before")(_threshold_shorthand("cpu_ops"))
    _ms = field_validator("latency", mode="before")(_threshold_shorthand("max_ms"))


class ReferenceSpec(_Strict):
    """The NPU applies convert.mean_values/std_values to its input; the ONNX model
    gets the same normalisation unless the model normalises its input itself."""

    apply_mean_std: bool = Field(True, description="give onnxruntime `(x - mean) / std` of convert.mean_values/"
                                                   "std_values; false when the model normalises its input itself")


class _AllowedWorsening(_Strict):
    """How much worse than a reference a metric may get: cosines and mAPs may drop, max abs
    error may grow, by this much; CPU layers may grow by this many; cycles, memory and latency by
    this fraction (0.05: 5% more). `null` leaves a metric out; max_abs is left out by default
    because its scale depends on the output."""

    cosine: Optional[float] = Field(None, ge=0.0, description="drop of the worst cosine per output")
    vs_sim_cosine: Optional[float] = Field(None, ge=0.0,
                                           description="board items: drop of the board-vs-simulator cosine")
    max_abs: Optional[float] = Field(None, ge=0.0, description="growth of the max abs error (its scale is the "
                                                               "output's, so not compared by default)")
    map50: Optional[float] = Field(None, ge=0.0, description="drop of mAP@0.5 against the labels")
    map: Optional[float] = Field(None, ge=0.0, description="drop of mAP@0.5:0.95 against the labels")
    agreement_map50: Optional[float] = Field(None, ge=0.0, description="drop of mAP@0.5 against onnxruntime's "
                                                                       "detections")
    cpu_ops: Optional[int] = Field(0, ge=0, description="growth of the layers on the CPU (simulator items)")
    cycles: Optional[float] = Field(0.05, ge=0.0, description="relative growth of the toolkit's estimated total cycles")
    memory: Optional[float] = Field(0.10, ge=0.0, description="relative growth of internal memory, weight memory "
                                                              "and the .rknn size, each")
    latency: Optional[float] = Field(0.25, ge=0.0, description="board items: relative growth of the median "
                                                               "inference() time")

    def allowed(self) -> Dict[str, float]:
        return {k: v for k, v in self.model_dump().items() if v is not None}


class BaselineGate(_AllowedWorsening):
    """Against the recorded baseline of the same toolkit version (`--rknn-baseline`)."""

    cosine: Optional[float] = Field(0.0005, ge=0.0)
    vs_sim_cosine: Optional[float] = Field(0.0005, ge=0.0)
    map50: Optional[float] = Field(0.005, ge=0.0)
    map: Optional[float] = Field(0.005, ge=0.0)
    agreement_map50: Optional[float] = Field(0.01, ge=0.0)


class UpgradeGate(_AllowedWorsening):
    """Against another toolkit version (`--rknn-compare-to`)."""

    cosine: Optional[float] = Field(0.002, ge=0.0)
    vs_sim_cosine: Optional[float] = Field(0.002, ge=0.0)
    map50: Optional[float] = Field(0.01, ge=0.0)
    map: Optional[float] = Field(0.01, ge=0.0)
    agreement_map50: Optional[float] = Field(0.02, ge=0.0)


class SpecModel(_Strict):
    model: str = Field(description="the ONNX model, relative to the spec file")
    target: str = Field(DEFAULT_TARGET, description="rknn.config's target_platform, in any case")
    inputs: Dict[str, Dict[str, Any]] = Field({}, description="per model input, one source: `file`, `images` or "
                                                              "`random` (below); an input left out gets `random` "
                                                              "with its defaults")
    convert: ConvertSpec = Field(ConvertSpec(), description="rknn.config arguments, plus `quantize`")
    checks: ChecksSpec = Field(ChecksSpec(), description="what an item must meet")
    reference: ReferenceSpec = Field(ReferenceSpec(), description="how onnxruntime's reference is fed")
    gate: UpgradeGate = Field(UpgradeGate(), description="allowed worsening against `--rknn-compare-to`'s version")
    baseline_gate: BaselineGate = Field(BaselineGate(), description="allowed worsening against `--rknn-baseline`")
    timeout: Optional[float] = Field(None, gt=0, allow_inf_nan=False,
                                     description="seconds for this spec's build+simulate job (null: "
                                                 "`--rknn-timeout`, 600 by default)")
    versions: Dict[str, Dict[str, Any]] = Field({}, description='per toolkit version in quotes ("2.5.0"), '
                                                                'overrides of any key above, merged deeply')


# ---------------------------------------------------------------- the loaded spec


@dataclass(frozen=True)
class Spec:
    """A validated spec, paths resolved, for one toolkit version (or the base)."""

    name: str
    path: Path  # the spec file (or a pseudo path for specs made in Python)
    base_dir: Path
    model_path: Path
    target: str
    inputs: Dict[str, InputSource]
    convert: ConvertSpec
    checks: ChecksSpec
    reference: ReferenceSpec
    gate: UpgradeGate
    baseline_gate: BaselineGate
    timeout: Optional[float]
    raw: Dict[str, Any] = field(repr=False)
    version: Optional[str] = None
    base: Optional["Spec"] = field(default=None, repr=False, compare=False)  # the spec file's, for a version's

    def for_version(self, version: str) -> "Spec":
        """This spec with `versions[version]` merged over it. Called on a version's spec, it gives
        the same file's spec for that other version (not this version's overrides under another name)."""
        base = self.base or self
        overrides = base.raw.get("versions", {}).get(version)
        if not overrides:
            return replace(base, version=version, base=base)
        merged = _deep_merge({k: v for k, v in base.raw.items() if k != "versions"}, overrides)
        spec = _build(merged, base.path, base.base_dir, base.name, where=f"versions.{version}.")
        return replace(spec, version=version, base=base)

    def resolve(self, relative: str) -> Path:
        return (self.base_dir / relative).resolve()

    def config_hash(self) -> str:
        """Hash of everything in the spec but `versions`: the key of the session's caches."""
        body = {k: v for k, v in self.raw.items() if k != "versions"}
        return _hash(body)

    def metrics_config_hash(self) -> str:
        """Hash of what decides the metrics (target, inputs, convert, reference, the detector's
        decoding), not the tolerances: a baseline survives a loosened threshold, not a new config."""
        body: Dict[str, Any] = {k: self.raw[k] for k in ("target", "inputs", "convert", "reference") if k in self.raw}
        body["target"] = self.target
        if self.checks.yolov5 is not None:
            body["yolov5"] = self.checks.yolov5.model_dump(include=_YOLO_DECODING)
        return _hash(body)


_YOLO_DECODING = {"layout", "anchors", "strides", "conf_threshold", "iou_threshold", "max_detections", "labels"}


def _hash(body) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True, default=str).encode()).hexdigest()[:16]


_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's when PyYAML has it: the same rules, faster
PYTHON_SPEC = Path("<python spec>")  # the pseudo path of a spec given as a dict


def spec_name(path: Path) -> str:
    name = path.name
    return name[: -len(SPEC_SUFFIX)] if name.endswith(SPEC_SUFFIX) else path.stem


def load_spec(path) -> Spec:
    """Read and validate a `*.rknn.yaml` file."""
    path = Path(path).resolve()
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise SpecError(path, "", f"cannot read the spec: {exc.strerror}") from None
    try:
        data = yaml.load(text, Loader=_YAML_LOADER)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpecError(path, where, f"not valid YAML: {problem}", "fix the YAML syntax") from None
    return spec_from_dict(data, path=path)


def spec_from_dict(data, path=None, base_dir=None, name=None) -> Spec:
    """Validate a spec given as a Python dict (the same keys as the YAML file)."""
    path = Path(path).resolve() if path else PYTHON_SPEC
    if base_dir is None:
        base_dir = path.parent if path != PYTHON_SPEC else Path.cwd()
    if name is None:
        name = spec_name(path) if path != PYTHON_SPEC else Path(str(data.get("model", "spec"))).stem
    if not isinstance(data, dict):
        raise SpecError(path, "", "the spec must be a mapping with at least a `model:` key", "see the README's spec reference")
    _check_version_keys(path, data.get("versions"))
    spec = _build(data, path, Path(base_dir).resolve(), name, where="")
    for version, overrides in spec.raw.get("versions", {}).items():
        if not isinstance(overrides, dict):
            raise SpecError(path, f"versions.{version}", "must be a mapping of spec keys to override")
        spec.for_version(version)  # validate every override up front
    return spec


def _build(data: Dict[str, Any], path: Path, base_dir: Path, name: str, where: str) -> Spec:
    try:
        model = SpecModel.model_validate(data)
    except ValidationError as exc:
        raise _spec_error(path, exc, SpecModel, where) from None
    inputs = {}
    for input_name, raw in model.inputs.items():
        inputs[input_name] = _input_source(path, input_name, raw, where)
    _check_quantize(path, model.convert, where)
    _check_quantize_only_keys(path, model.convert, where)
    _check_std_values(path, model.convert, where)
    _check_op_target_values(path, model.convert, where)
    _check_target(path, model.target, where)
    _check_target_not_in_convert(path, model.convert, where)
    model_path = (base_dir / model.model).resolve()
    if not model_path.is_file():
        raise SpecError(path, f"{where}model", f"model file not found: {model_path}",
                        "paths in a spec are relative to the spec file")
    return Spec(
        name=name,
        path=path,
        base_dir=base_dir,
        model_path=model_path,
        target=model.target,
        inputs=inputs,
        convert=model.convert,
        checks=model.checks,
        reference=model.reference,
        gate=model.gate,
        baseline_gate=model.baseline_gate,
        timeout=model.timeout,
        raw=copy.deepcopy(data),
    )


def _input_source(path: Path, input_name: str, raw: Dict[str, Any], where: str) -> InputSource:
    field_name = f"{where}inputs.{input_name}"
    kinds = [k for k in INPUT_KINDS if k in raw]
    if len(kinds) != 1:
        found = f"found {', '.join(kinds)}" if kinds else "found none"
        raise SpecError(path, field_name, f"needs exactly one of `file`, `images`, `random` ({found})",
                        "for example `{random: [0, 1]}` or `{images: 'val/*.jpg'}`")
    cls = INPUT_KINDS[kinds[0]]
    try:
        source = cls.model_validate(raw)
    except ValidationError as exc:
        raise _spec_error(path, exc, cls, field_name + ".") from None
    if isinstance(source, ImageInput):
        _check_image_sizing(path, field_name, source)
    return source


def _check_image_sizing(path: Path, field_name: str, source: ImageInput) -> None:
    if source.size is not None and source.letterbox is not None:
        raise SpecError(path, f"{field_name}.size", "`size` (stretch) and `letterbox` (keep the aspect ratio) "
                                                    "cannot both be given", "keep the one you mean")
    if "pad" in source.model_fields_set and source.letterbox is None:
        raise SpecError(path, f"{field_name}.pad", "only a letterbox is padded, and this input has no `letterbox`",
                        "add `letterbox: N`, or remove `pad`")


def _check_quantize(path: Path, convert: ConvertSpec, where: str) -> None:
    if convert.quantize is True:
        raise SpecError(path, f"{where}convert.quantize", "an int8 build needs a calibration dataset",
                        "write `quantize: {dataset: 'calib/*.png'}`, or `quantize: false` for a float build")


def _check_quantize_only_keys(path: Path, convert: ConvertSpec, where: str) -> None:
    if isinstance(convert.quantize, QuantizeSpec):
        return
    given = convert.config_kwargs()
    for key in QUANTIZE_ONLY:
        if given.get(key) is not None:
            raise SpecError(path, f"{where}convert.{key}", "applies only to an int8 build, and this spec builds a "
                                                           "float model, so it would do nothing",
                            "add `quantize: {dataset: 'calib/*.png'}`, or remove the key")


def _check_std_values(path: Path, convert: ConvertSpec, where: str) -> None:
    for index, values in enumerate(convert.std_values or []):
        if 0 in values:
            raise SpecError(path, f"{where}convert.std_values[{index}]",
                            f"channel {values.index(0)} is 0, and the NPU divides its input by it ((x - mean) / std)",
                            "use 1 for a channel that needs no scaling")


def _check_op_target_values(path: Path, convert: ConvertSpec, where: str) -> None:
    for tensor, target in (convert.op_target or {}).items():
        if target.lower() not in OP_TARGETS:
            raise SpecError(path, f"{where}convert.op_target.{tensor}", f"'{target}' is not a place to run an op",
                            f"use one of {', '.join(OP_TARGETS)}")


def _check_target(path: Path, target: str, where: str) -> None:
    if target.lower() not in TARGETS:
        close = difflib.get_close_matches(target.lower(), TARGETS, n=1)
        hint = f"did you mean `{close[0]}`? " if close else ""
        raise SpecError(path, f"{where}target", f"'{target}' is not a platform rknn-toolkit2 builds for",
                        f"{hint}known targets: {', '.join(TARGETS)}")


def _check_target_not_in_convert(path: Path, convert: ConvertSpec, where: str) -> None:
    """The worker passes `target:` to rknn.config as target_platform; a second one would clash."""
    platform = convert.config_kwargs().get("target_platform")
    if platform is not None:
        raise SpecError(path, f"{where}convert.target_platform", "the platform is the spec's `target:`",
                        f"write `target: {platform}` at the top level and remove it from `convert`")


def _check_version_keys(path: Path, versions) -> None:
    """`versions:` keys are toolkit versions as strings, e.g. "2.5.0". YAML reads `2.5:` as a number,
    which would name no version and so override nothing."""
    if not isinstance(versions, dict):
        return  # the schema says what is wrong
    for key in versions:
        if isinstance(key, str) and is_version(key):
            continue
        close = [v for v in KNOWN_VERSIONS if v.startswith(f"{key}.")] or difflib.get_close_matches(
            str(key), KNOWN_VERSIONS, n=1)
        number = " (YAML reads it as a number)" if not isinstance(key, str) else ""
        raise SpecError(path, f"versions.{key}", f"{key!r} is not a toolkit version like \"2.5.0\"{number}, so "
                                                 f"these overrides would apply to no version",
                        f'write "{close[-1]}", in quotes' if close else 'write the full version in quotes, e.g. "2.5.0"')


# pydantic names the branch of a union it tried in the error's location (`quantize.bool`,
# `quantize.QuantizeSpec.dataset`): type names, never spec keys, which are snake_case.
_UNION_BRANCH = re.compile(r"bool|str|int|float|[A-Z]\w*|.*\[.*\]")


def _spec_error(path: Path, exc: ValidationError, model_cls, prefix: str) -> SpecError:
    errors = _relevant_errors([dict(e) for e in exc.errors()])
    first = errors[0]
    loc = [str(part) for part in first["loc"]]
    field_name = prefix + ".".join(loc)
    others = len({e["loc"] for e in errors} - {first["loc"]})
    more = f" (and {others} more problem{'s' if others > 1 else ''})" if others else ""
    if first["type"] == "extra_forbidden":
        known = _known_keys(model_cls, first["loc"][:-1])
        close = difflib.get_close_matches(loc[-1], known, n=1)
        fix = f"did you mean `{close[0]}`?" if close else f"known keys: {', '.join(known)}"
        return SpecError(path, field_name, f"unknown key{more}", fix)
    if first["type"] == "missing":
        return SpecError(path, field_name, f"required key is missing{more}", "add it")
    value = first.get("input")
    shown = repr(value) if not isinstance(value, (dict, list)) or len(repr(value)) < 60 else type(value).__name__
    return SpecError(path, field_name, f"{first['msg']}, got {shown}{more}")


def _relevant_errors(errors: List[dict]) -> List[dict]:
    """The errors worth showing, most useful first, with union branches left out of their location.
    For a value that fits one branch of a union (a dict for `quantize: bool | {dataset}`), the
    branch that fits gets further into it; the others only say "not a bool" about the whole value."""
    for error in errors:
        error["depth"] = len(error["loc"])
        error["loc"] = tuple(part for part in error["loc"] if not _UNION_BRANCH.fullmatch(str(part)))
    relevant = [e for e in errors if not any(_is_shallower_branch(e, other) for other in errors)]
    order = {"extra_forbidden": 0, "missing": 1}
    return sorted(relevant, key=lambda e: order.get(e["type"], 2))


def _is_shallower_branch(error: dict, other: dict) -> bool:
    return other["depth"] > error["depth"] and other["loc"][:len(error["loc"])] == error["loc"]


def _known_keys(model_cls, loc) -> List[str]:
    """Field names of the model that `loc` points into."""
    cls = model_cls
    for part in loc:
        info = getattr(cls, "model_fields", {}).get(part)
        if info is None:
            break
        annotation = info.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        nested = [c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)]
        if not nested:
            break
        cls = nested[0]
    return sorted(getattr(cls, "model_fields", {}))


def _deep_merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    merged = copy.deepcopy(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged
