"""Metrics and checks: cosine in float64 per sample, NaN never passes, messages carry the numbers."""

import math

import numpy as np
import pytest

from pytest_rknn.checks import evaluate, slice_failures
from pytest_rknn.errors import SpecError
from pytest_rknn.metrics import compare_output, compare_outputs, compare_slice, cosine
from pytest_rknn.result import OutputMetrics
from pytest_rknn.spec import spec_from_dict

RNG = np.random.default_rng(0)
REF = [RNG.standard_normal((1, 10)).astype(np.float32) for _ in range(3)]
LABELS = ["a.png", "b.png", "c.png"]


def spec(workdir, checks):
    return spec_from_dict({"model": "cnn.onnx", "checks": checks}, base_dir=workdir)


def test_cosine_is_float64_and_undefined_for_all_zeros():
    a = np.array([1e-20, 2e-20], np.float32)
    assert cosine(a, a) == pytest.approx(1.0)
    assert math.isnan(cosine(np.zeros(4), np.ones(4)))


def test_the_worst_sample_is_found_and_named():
    got = [REF[0], REF[1] + RNG.standard_normal((1, 10)).astype(np.float32), REF[2]]
    metrics = compare_output("logits", REF, got, LABELS)
    assert metrics.worst_sample == 1 and metrics.worst_label == "b.png"
    assert metrics.worst_cosine == pytest.approx(cosine(got[1], REF[1]))
    assert metrics.cosines[0] == pytest.approx(1.0)
    assert metrics.max_abs == pytest.approx(float(np.abs(got[1] - REF[1]).max()), rel=1e-6)


def test_a_too_strict_threshold_fails_with_output_sample_value_and_threshold(workdir):
    got = [r * 0.9 + 0.05 for r in REF]
    metrics = compare_outputs(["logits"], [[r] for r in REF], [[g] for g in got], LABELS)
    worst = metrics[0]
    failures = evaluate(spec(workdir, {"cosine": {"min": 0.9999999}}), metrics)
    assert failures == [f"output 'logits' sample {worst.worst_sample} ({worst.worst_label}): cosine "
                        f"{math.floor(worst.worst_cosine * 1e8) / 1e8:.8f} < min 0.9999999"]
    assert evaluate(spec(workdir, {"cosine": {"min": 0.9, "outputs": {"logits": 0.95}}}), metrics) == []


def test_an_all_zero_output_fails_even_a_lenient_threshold(workdir):
    metrics = compare_outputs(["logits"], [[r] for r in REF], [[np.zeros_like(r)] for r in REF], LABELS)
    failures = evaluate(spec(workdir, {"cosine": {"min": -1.0}}), metrics)
    assert len(failures) == 1 and "cosine nan" in failures[0] and "all-zero" in failures[0]
    assert "the RKNN output is all zeros" in metrics[0].notes[0]


def test_nan_in_the_output_fails_before_cosine_unless_the_reference_has_it_too(workdir):
    broken = [r.copy() for r in REF]
    broken[2][0, 3] = np.nan
    metrics = compare_outputs(["logits"], [[r] for r in REF], [[b] for b in broken], LABELS)
    assert evaluate(spec(workdir, {}), metrics) == ["output 'logits' sample 2: 1 NaN/Inf values where the "
                                                    "reference is finite"]
    both = compare_outputs(["logits"], [[b] for b in broken], [[b] for b in broken], LABELS)
    assert both[0].ref_nonfinite == 1 and evaluate(spec(workdir, {}), both) == []


def test_shape_mismatch_and_missing_outputs_fail(workdir):
    wrong = compare_outputs(["logits"], [[r] for r in REF], [[r.reshape(2, 5)] for r in REF], LABELS)
    assert "shape (2, 5) does not match the reference (1, 10)" in evaluate(spec(workdir, {}), wrong)[0]
    squeezed = compare_outputs(["logits"], [[r] for r in REF], [[r.reshape(10)] for r in REF], LABELS)
    assert evaluate(spec(workdir, {}), squeezed) == []  # a dropped size-1 axis is the same data
    missing = compare_outputs(["logits"], [[r] for r in REF], [[r] for r in REF[:2]] + [None], LABELS)
    assert evaluate(spec(workdir, {}), missing) == ["output 'logits': no output for 1 of 3 samples"]


def test_max_abs_is_optional_and_per_output(workdir):
    got = [r + 0.25 for r in REF]
    metrics = compare_outputs(["logits"], [[r] for r in REF], [[g] for g in got], LABELS)
    assert evaluate(spec(workdir, {"cosine": -1}), metrics) == []
    failures = evaluate(spec(workdir, {"cosine": -1, "max_abs": 0.1}), metrics)
    assert failures == ["output 'logits': max abs error 0.25 > max 0.1"]


def test_a_threshold_for_an_unknown_output_is_a_spec_error(workdir):
    metrics = compare_outputs(["logits"], [[r] for r in REF], [[r] for r in REF], LABELS)
    with pytest.raises(SpecError) as info:
        evaluate(spec(workdir, {"cosine": {"outputs": {"logit": 0.9}}}), metrics)
    assert info.value.field == "checks.cosine.outputs.logit" and "its outputs are: logits" in info.value.message


SLICED = {"cosine": {"slices": [{"name": "head", "output": "features", "axis": 1, "stop": 4},
                                {"name": "middle", "output": "features", "axis": 1, "start": 4, "stop": 6},
                                {"name": "tail", "output": "features", "axis": 1, "start": 6, "min": 0.9}]}}


def test_a_zeroed_middle_slice_fails_and_the_parts_around_it_pass(workdir):
    """Channels 4:6 of the second output zeroed: only `middle` fails; the tail after it is large enough that
    4: as a whole would still pass, so a slice that ignored its stop would pass too."""
    rng = np.random.default_rng(4)
    features = [rng.standard_normal((1, 10, 2)).astype(np.float32) * [[[1]] * 4 + [[0.01]] * 2 + [[100]] * 4]
                for _ in range(3)]
    reference = [[r, f] for r, f in zip(REF, features)]
    got = [[r, f.copy()] for r, f in zip(REF, features)]
    got[2][1][:, 4:6] = 0  # the last sample's middle part
    checks = spec(workdir, SLICED)
    parts = [compare_slice(part, 1, reference, got, LABELS) for part in checks.checks.cosine.slices]
    head, middle, tail = parts
    assert head.worst_cosine == pytest.approx(1.0) and tail.worst_cosine == pytest.approx(1.0)
    assert math.isnan(middle.worst_cosine) and (middle.worst_sample, middle.worst_label) == (2, "c.png")
    assert middle.ref_range == [pytest.approx(float(min(f[:, 4:6].min() for f in features))),
                                pytest.approx(float(max(f[:, 4:6].max() for f in features)))]
    assert head.ref_range[1] < 10 < tail.ref_range[1]
    assert slice_failures(checks, parts) == [
        "slice 'middle' of output 'features' (axis 1, 4:6) sample 2 (c.png): cosine nan < min 0.99 "
        "(undefined: an all-zero side)"]
    assert cosine(got[2][1][:, 4:], features[2][:, 4:]) > 0.9999  # 4: whole would pass


def test_a_slice_at_its_minimum_passes_and_just_under_it_fails(workdir):
    reference = [[r, np.array([[3.0, 4.0, 1.0, 0.0]], np.float32)] for r in REF]
    got = [[r, np.array([[3.0, 4.0, 0.0, 1.0]], np.float32)] for r in REF]
    part = {"name": "p", "output": "features", "axis": -1, "start": 1, "stop": 3}  # [4, 1] against [4, 0]
    value = 4 / math.sqrt(17)
    for minimum, failed in ((value - 1e-9, False), (value + 1e-9, True)):
        checks = spec(workdir, {"cosine": {"slices": [dict(part, min=minimum)]}})
        measured = [compare_slice(checks.checks.cosine.slices[0], 1, reference, got, LABELS)]
        assert measured[0].worst_cosine == pytest.approx(value)
        assert bool(slice_failures(checks, measured)) is failed, minimum


def _output(name, cosine, max_abs=0.1, vs_sim=None):
    return OutputMetrics(name=name, ref_shape=[1, 10], samples=1, cosines=[cosine], worst_cosine=cosine,
                         worst_label="a.png", max_abs=max_abs, vs_sim_cosine=vs_sim)


@pytest.mark.parametrize("checks, at_the_line, beyond", [
    ({"cosine": 0.99}, _output("logits", 0.99), _output("logits", 0.98999)),
    ({"cosine": {"min": 0.5, "outputs": {"logits": 0.99}}}, _output("logits", 0.99), _output("logits", 0.98999)),
    ({"cosine": {"min": 0.99, "outputs": {"features": 0.5}}}, _output("logits", 0.99), _output("logits", 0.98999)),
    ({"max_abs": 0.5}, _output("logits", 1.0, max_abs=0.5), _output("logits", 1.0, max_abs=0.50001)),
    ({"max_abs": {"max": 9, "outputs": {"logits": 0.5}}}, _output("logits", 1.0, max_abs=0.5),
     _output("logits", 1.0, max_abs=0.50001)),
    ({"vs_sim_cosine": 0.999}, _output("logits", 1.0, vs_sim=0.999), _output("logits", 1.0, vs_sim=0.99899)),
    ({"vs_sim_cosine": {"min": 0.5, "outputs": {"logits": 0.999}}}, _output("logits", 1.0, vs_sim=0.999),
     _output("logits", 1.0, vs_sim=0.99899)),
])
def test_each_output_threshold_passes_at_its_line_and_fails_just_beyond(workdir, checks, at_the_line, beyond):
    judged = spec(workdir, checks)
    other = _output("features", 1.0, max_abs=0.0, vs_sim=1.0)
    assert evaluate(judged, [at_the_line, other]) == []
    [line] = evaluate(judged, [beyond, other])
    assert line.startswith("output 'logits'")


def test_the_board_vs_simulator_line_gives_both_cosines_and_is_judged_only_for_board_items(workdir):
    judged = spec(workdir, {"cosine": 0.9, "vs_sim_cosine": 0.9999})
    assert evaluate(judged, [_output("logits", 0.95, vs_sim=None)]) == []  # a simulator item has no vs_sim
    assert evaluate(judged, [_output("logits", 0.95, vs_sim=0.998)]) == [
        "output 'logits': board vs simulator cosine 0.998000 < checks.vs_sim_cosine min 0.9999, while against "
        "onnxruntime it is 0.950000 (min 0.9)"]
    assert evaluate(spec(workdir, {"vs_sim_cosine": None}), [_output("logits", 1.0, vs_sim=0.5)]) == []
