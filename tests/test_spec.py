"""The spec schema: every mistake is one SPEC message naming the file, the field and the fix."""

import pytest

from pytest_rknn.errors import SPEC, SpecError
from pytest_rknn.spec import FileInput, ImageInput, RandomInput, load_spec, spec_from_dict

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


def test_a_bad_version_override_is_found_when_the_spec_is_loaded(workdir):
    error = spec_error(workdir, "model: cnn.onnx\nversions:\n  2.3.2: {checks: {cosine: {min: 2}}}\n")
    assert error.field == "versions.2.3.2.checks.cosine.min"


def test_specs_can_be_written_in_python(workdir):
    spec = spec_from_dict({"model": "cnn.onnx"}, base_dir=workdir)
    assert spec.name == "cnn" and spec.model_path == workdir / "cnn.onnx"


def test_gates_are_validated_with_suggestions(workdir):
    spec = spec_from_dict({"model": "cnn.onnx", "gate": {"map50": 0.02, "max_abs": 0.1}}, base_dir=workdir)
    assert spec.gate.allowed() == {"cosine": 0.002, "vs_sim_cosine": 0.002, "max_abs": 0.1, "map50": 0.02,
                                   "map": 0.01, "agreement_map50": 0.02}
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
