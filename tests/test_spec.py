"""The spec schema: every mistake is one SPEC message naming the file, the field and the fix."""

import pytest

from pytest_rknn.errors import SPEC, SpecError
from pytest_rknn.spec import FileInput, ImageInput, RandomInput, _deep_merge, load_spec, spec_from_dict

from conftest import write_spec


def spec_error(folder, text) -> SpecError:
    path = write_spec(folder, "m", text)
    with pytest.raises(SpecError) as info:
        load_spec(path)
    assert info.value.failure_class == SPEC
    assert str(path) in info.value.message
    return info.value


def test_a_minimal_spec_gets_the_defaults(workdir):
    spec = load_spec(write_spec(workdir, "cnn", "model: cnn.onnx\n"))
    assert spec.name == "cnn"
    assert spec.model_path == workdir / "cnn.onnx"
    assert spec.target == "rk3588"
    assert spec.checks.cosine.min == 0.99
    assert spec.convert.quantize is False
    assert spec.inputs == {}


def test_a_misspelt_key_names_the_field_and_suggests_the_right_one(workdir):
    error = spec_error(workdir, "model: cnn.onnx\nchecks:\n  cosine: {mni: 0.9}\n")
    assert error.field == "checks.cosine.mni"
    assert "unknown key" in error.message and "did you mean `min`?" in error.message


def test_a_misspelt_top_level_key_is_an_error(workdir):
    error = spec_error(workdir, "model: cnn.onnx\ninptus: {}\n")
    assert error.field == "inptus" and "`inputs`" in error.message


def test_a_missing_model_file_says_paths_are_relative_to_the_spec(workdir):
    error = spec_error(workdir, "model: nothere.onnx\n")
    assert error.field == "model"
    assert str(workdir / "nothere.onnx") in error.message
    assert "relative to the spec file" in error.message


def test_yaml_syntax_errors_give_the_line(workdir):
    error = spec_error(workdir, "model: cnn.onnx\ninputs: {images: [1, 2\n")
    assert "line 3" in error.field and "not valid YAML" in error.message


def test_an_input_needs_exactly_one_source(workdir):
    error = spec_error(workdir, "model: cnn.onnx\ninputs:\n  images: {seed: 1}\n")
    assert error.field == "inputs.images" and "exactly one of `file`, `images`, `random`" in error.message


def test_wrong_types_name_the_nested_field_and_the_value(workdir):
    error = spec_error(workdir, "model: cnn.onnx\ninputs:\n  images: {images: '*.png', color: grey}\n")
    assert error.field == "inputs.images.color" and "'grey'" in error.message


def test_int8_without_a_dataset_is_refused_with_the_fix(workdir):
    error = spec_error(workdir, "model: cnn.onnx\nconvert: {quantize: true}\n")
    assert error.field == "convert.quantize" and "quantize: {dataset:" in error.message


def test_input_kinds_and_shorthands(workdir):
    spec = load_spec(write_spec(workdir, "cnn", """
model: cnn.onnx
inputs:
  a: {images: "*.png", letterbox: 64}
  b: {random: [0, 255], count: 3, dtype: uint8}
  c: {file: x.npy}
convert: {mean_values: [0, 0, 0], std_values: [[255, 255, 255]], optimization_level: 2, some_new_key: 1}
checks: {cosine: 0.95, max_abs: 0.5}
"""))
    assert isinstance(spec.inputs["a"], ImageInput) and spec.inputs["a"].letterbox == (64, 64)
    assert isinstance(spec.inputs["b"], RandomInput) and spec.inputs["b"].random == (0, 255)
    assert isinstance(spec.inputs["c"], FileInput)
    assert spec.convert.mean_values == [[0, 0, 0]]
    # Keys we do not model go to rknn.config untouched; the worker checks them against the toolkit.
    assert spec.convert.config_kwargs() == {"mean_values": [[0, 0, 0]], "std_values": [[255, 255, 255]],
                                            "optimization_level": 2, "some_new_key": 1}
    assert spec.checks.cosine.min == 0.95 and spec.checks.max_abs.max == 0.5


def test_version_overrides_merge_deeply_and_change_the_config_hash(workdir):
    spec = load_spec(write_spec(workdir, "cnn", """
model: cnn.onnx
checks: {cosine: {min: 0.99, outputs: {logits: 0.995}}}
versions:
  2.3.2: {checks: {cosine: {min: 0.98}}}
"""))
    old = spec.for_version("2.3.2")
    assert old.checks.cosine.min == 0.98
    assert old.checks.cosine.outputs == {"logits": 0.995}
    assert spec.for_version("2.5.0").checks.cosine.min == 0.99
    assert old.config_hash() != spec.for_version("2.5.0").config_hash()


def test_an_override_replaces_lists_and_switches_checks_off_with_null_and_only_for_its_version(workdir):
    spec = spec_from_dict({
        "model": "cnn.onnx", "target": "rk3588",
        "convert": {"mean_values": [[0, 0, 0]], "std_values": [[255, 255, 255]], "optimization_level": 3},
        "checks": {"cosine": {"min": 0.99, "slices": [{"name": "a", "output": "logits", "stop": 2}]}, "max_abs": 0.5,
                   "placement": 0},
        "gate": {"cosine": 0.01}, "baseline_gate": {"cosine": 0.02},
        "versions": {"2.3.2": {"target": "rk3566", "convert": {"mean_values": [[1, 2, 3]]},
                               "checks": {"max_abs": None, "placement": {"allow_cpu": ["Resize"]},
                                          "cosine": {"slices": []}},
                               "gate": {"map50": 0.5}, "baseline_gate": {"cosine": None}, "timeout": 9}},
    }, base_dir=workdir)
    old, new = spec.for_version("2.3.2"), spec.for_version("2.5.0")
    assert (old.target, new.target) == ("rk3566", "rk3588")
    assert old.convert.mean_values == [[1, 2, 3]] and old.convert.std_values == [[255, 255, 255]]
    assert old.convert.optimization_level == 3  # a sibling of the overridden key stays
    assert old.checks.max_abs is None and new.checks.max_abs.max == 0.5
    assert (old.checks.placement.cpu_ops, old.checks.placement.allow_cpu) == (0, ["Resize"])
    assert old.checks.cosine.slices == [] and [p.name for p in new.checks.cosine.slices] == ["a"]
    assert old.checks.cosine.min == 0.99
    assert old.gate.allowed()["map50"] == 0.5 and old.gate.allowed()["cosine"] == 0.01 and new.gate.map50 == 0.01
    assert "cosine" not in old.baseline_gate.allowed() and new.baseline_gate.cosine == 0.02
    assert (old.timeout, new.timeout) == (9, None)
    assert (old.version, new.version) == ("2.3.2", "2.5.0") and old.name == new.name == "cnn"
    assert new.for_version("2.3.2") == old  # a version's spec gives the file's spec for another version
    assert spec.raw["versions"]["2.3.2"]["convert"] == {"mean_values": [[1, 2, 3]]}  # merging copies


def test_a_bad_version_override_is_found_when_the_spec_is_loaded(workdir):
    error = spec_error(workdir, "model: cnn.onnx\nversions:\n  2.3.2: {checks: {cosine: {min: 2}}}\n")
    assert error.field == "versions.2.3.2.checks.cosine.min"


def test_specs_can_be_written_in_python(workdir):
    spec = spec_from_dict({"model": "cnn.onnx"}, base_dir=workdir)
    assert spec.name == "cnn" and spec.model_path == workdir / "cnn.onnx"


def test_gates_are_validated_with_suggestions(workdir):
    spec = spec_from_dict({"model": "cnn.onnx", "gate": {"map50": 0.02, "max_abs": 0.1}}, base_dir=workdir)
    assert spec.gate.allowed() == {"cosine": 0.002, "vs_sim_cosine": 0.002, "max_abs": 0.1, "map50": 0.02,
                                   "map": 0.01, "agreement_map50": 0.02, "cpu_ops": 0, "cycles": 0.05, "memory": 0.10,
                                   "latency": 0.25}
    assert spec_from_dict({"model": "cnn.onnx", "baseline_gate": {"cosine": None}},
                          base_dir=workdir).baseline_gate.allowed().get("cosine") is None
    with pytest.raises(SpecError) as excinfo:
        spec_from_dict({"model": "cnn.onnx", "gate": {"mAP50": 0.01}}, base_dir=workdir)
    assert "gate.mAP50: unknown key (did you mean `map50`?)" in excinfo.value.message
    with pytest.raises(SpecError) as excinfo:
        spec_from_dict({"model": "cnn.onnx", "baseline_gate": {"cosine": -1}}, base_dir=workdir)
    assert "baseline_gate.cosine" in excinfo.value.message


def test_the_metrics_config_hash_ignores_tolerances_but_not_the_conversion(workdir):
    base = {"model": "cnn.onnx", "checks": {"cosine": 0.99}}
    same = spec_from_dict(base, base_dir=workdir).metrics_config_hash()
    assert spec_from_dict({**base, "checks": {"cosine": 0.9}, "gate": {"cosine": 0.1}},
                          base_dir=workdir).metrics_config_hash() == same
    assert spec_from_dict({**base, "convert": {"optimization_level": 2}},
                          base_dir=workdir).metrics_config_hash() != same


YOLO = {"checks": {"yolov5": {}}}
# One change each to what decides the metrics: the baseline's config hash must move with every one alone.
METRIC_SETTINGS = {
    "target": {"target": "rk3566"},
    "inputs": {"inputs": {"images": {"random": [0, 2]}}},
    "convert": {"convert": {"mean_values": [[1, 1, 1]]}},
    "quantize": {"convert": {"quantize": {"dataset": "*.onnx"}}},
    "reference": {"reference": {"apply_mean_std": False}},
    **{f"yolov5 {key}": {"checks": {"yolov5": {key: value}}} for key, value in {
        "layout": "heads", "anchors": [[10, 13, 16, 30, 33, 23]], "strides": [16], "conf_threshold": 0.3,
        "iou_threshold": 0.5, "max_detections": 10, "labels": "labels.json"}.items()},
}
# Tolerances, gates and run settings: a baseline survives them.
NOT_METRIC_SETTINGS = [
    {"checks": {"cosine": {"min": 0.5, "outputs": {"logits": 0.9}}, "max_abs": 2, "vs_sim_cosine": 0.9,
                "placement": {"cpu_ops": 3}, "latency": {"max_ms": 3, "runs": 4}}},
    {"checks": {"yolov5": {"count_tolerance": 3, "map50_ratio": 0.5, "max_map50_drop": 0.1,
                           "min_agreement_map50": 0.2, "overlays": 0}}},
    {"gate": {"cosine": 0.1}, "baseline_gate": {"map50": 0.3}, "timeout": 3},
    {"versions": {"2.3.2": {"convert": {"optimization_level": 1}}}},
]


def test_each_metric_setting_alone_moves_the_metrics_config_hash_and_no_tolerance_does(workdir):
    def digest(*changes):
        data = {"model": "cnn.onnx", **YOLO}
        for change in changes:
            data = _deep_merge(data, change)
        return spec_from_dict(data, base_dir=workdir).metrics_config_hash()

    same = digest()
    moved = {name: digest(change) for name, change in METRIC_SETTINGS.items()}
    assert [name for name, value in moved.items() if value == same] == []
    assert len(set(moved.values())) == len(moved)
    assert [change for change in NOT_METRIC_SETTINGS if digest(change) != same] == []


def test_the_metrics_config_hash_is_stable_so_baselines_recorded_before_are_found(workdir):
    """A baseline entry is found by this hash: the same spec must give the same hash in every pytest-rknn
    release, or every recorded baseline goes missing at once (and --rknn-baseline-strict fails every item).
    A change here must be deliberate, and said in the release notes."""
    assert spec_from_dict({"model": "cnn.onnx"}, base_dir=workdir).metrics_config_hash() == "73f437f5be16acd0"
    detector = spec_from_dict({"model": "cnn.onnx", "target": "rk3566", "inputs": {"images": {"random": [0, 1]}},
                               "convert": {"mean_values": [[0, 0, 0]]}, "reference": {"apply_mean_std": False},
                               "checks": {"yolov5": {"conf_threshold": 0.3}}}, base_dir=workdir)
    assert detector.metrics_config_hash() == "95923d1627d78aac"


def test_the_config_hash_moves_with_every_key_but_versions(workdir):
    def digest(change):
        return spec_from_dict(_deep_merge({"model": "cnn.onnx"}, change), base_dir=workdir).config_hash()

    same = digest({})
    assert digest({"versions": {"2.3.2": {"convert": {"optimization_level": 1}}}}) == same
    changes = [*METRIC_SETTINGS.values(), *NOT_METRIC_SETTINGS[:3]]
    assert [change for change in changes if digest(change) == same] == []


@pytest.mark.parametrize("text, field, words", [
    ("versions:\n  2.5: {checks: {cosine: 0.9}}\n", "versions.2.5",
     '2.5 is not a toolkit version like "2.5.0" (YAML reads it as a number), so these overrides would apply to no '
     'version (write "2.5.0", in quotes)'),
    ("versions:\n  '2.3': {}\n", "versions.2.3", "'2.3' is not a toolkit version"),
    ("versions:\n  latest: {}\n", "versions.latest", 'write the full version in quotes, e.g. "2.5.0"'),
])
def test_version_override_keys_must_be_versions_in_quotes(workdir, text, field, words):
    error = spec_error(workdir, "model: cnn.onnx\n" + text)
    assert error.field == field and words in error.message


def test_an_unknown_target_is_refused_with_the_known_ones(workdir):
    error = spec_error(workdir, "model: cnn.onnx\ntarget: rk3855\n")
    assert error.field == "target" and "'rk3855' is not a platform rknn-toolkit2 builds for (did you mean `rk3588`? " \
                                      "known targets: rk2118, rk3562" in error.message
    assert load_spec(write_spec(workdir, "ok", "model: cnn.onnx\ntarget: RK3576\n")).target == "RK3576"  # any case


@pytest.mark.parametrize("convert, field, words", [
    ("{std_values: [[255, 0, 255]]}", "convert.std_values[0]",
     "channel 1 is 0, and the NPU divides its input by it ((x - mean) / std) (use 1 for a channel that needs no "
     "scaling)"),
    ("{op_target: {conv1: gpu0}}", "convert.op_target.conv1", "'gpu0' is not a place to run an op (use one of npu, "
                                                             "cpu, gpu, auto)"),
    ("{quantized_algorithm: mmse}", "convert.quantized_algorithm",
     "applies only to an int8 build, and this spec builds a float model, so it would do nothing"),
    ("{quant_img_RGB2BGR: true}", "convert.quant_img_RGB2BGR", "applies only to an int8 build"),
    ("{target_platform: rk3566}", "convert.target_platform", "the platform is the spec's `target:` (write "
                                                            "`target: rk3566` at the top level"),
    ("{quantize: {dataset: '*.png'}, quantized_method: group33}", "convert.quantized_method", "'groupN'"),
    ("{quantize: {dataset: '*.png'}, quantized_dtype: w8}", "convert.quantized_dtype", "'w8a16'"),
])
def test_convert_values_the_toolkit_would_refuse_or_ignore_are_spec_errors(workdir, convert, field, words):
    error = spec_error(workdir, f"model: cnn.onnx\nconvert: {convert}\n")
    assert error.field == field and words in error.message


def test_the_quantisation_settings_of_newer_toolkits_are_accepted(workdir):
    spec = load_spec(write_spec(workdir, "q", "model: cnn.onnx\nconvert: {quantize: {dataset: '*.png'}, "
                                              "quantized_algorithm: gdq, quantized_method: group64, "
                                              "quantized_dtype: w8a16}\n"))
    assert spec.convert.config_kwargs() == {"quantized_dtype": "w8a16", "quantized_algorithm": "gdq",
                                            "quantized_method": "group64"}


@pytest.mark.parametrize("image, field, words", [
    ("{images: '*.png', size: 32, letterbox: 32}", "inputs.images.size", "cannot both be given"),
    ("{images: '*.png', pad: 0}", "inputs.images.pad", "only a letterbox is padded"),
])
def test_image_settings_that_would_do_nothing_are_refused(workdir, image, field, words):
    error = spec_error(workdir, f"model: cnn.onnx\ninputs:\n  images: {image}\n")
    assert error.field == field and words in error.message


def test_an_endless_timeout_is_refused(workdir):
    assert spec_error(workdir, "model: cnn.onnx\ntimeout: .inf\n").field == "timeout"


@pytest.mark.parametrize("convert, message", [
    # A dict fits the {dataset} branch of `quantize: bool | {dataset}`: its own problem is shown, not "not a bool".
    ("{quantize: {calibration: x}}", "convert.quantize.calibration: unknown key (and 1 more problem) (known keys: "
                                     "dataset, preprocess)"),
    ("{quantize: {dataset: 5}}", "convert.quantize.dataset: Input should be a valid string, got 5"),
    ("{quantize: {dataset: [a, 3]}}", "convert.quantize.dataset.1: Input should be a valid string, got 3"),
    ("{quantize: yes please}", "convert.quantize: Input should be a valid boolean, unable to interpret input, got "
                               "'yes please'"),
])
def test_a_value_for_a_union_field_gets_the_problem_of_the_branch_it_fits(workdir, convert, message):
    error = spec_error(workdir, f"model: m.onnx\nconvert: {convert}\n")
    assert error.message == f"{workdir / 'm.rknn.yaml'}: {message}"
