"""Metrics and checks: cosine in float64 per sample, NaN never passes, messages carry the numbers."""

import math
import warnings

import numpy as np
import pytest

from pytest_rknn.checks import evaluate, slice_failures
from pytest_rknn.errors import SpecError
from pytest_rknn.metrics import compare_output, compare_outputs, compare_slice, cosine
from pytest_rknn.result import OutputMetrics, SliceMetrics, format_cosine
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


def test_an_all_zero_output_fails_even_a_lenient_threshold_and_the_line_says_the_cosine_is_undefined(workdir):
    metrics = compare_outputs(["logits"], [[r] for r in REF], [[np.zeros_like(r)] for r in REF], LABELS)
    assert evaluate(spec(workdir, {"cosine": {"min": -1.0}}), metrics) == [
        "output 'logits' sample 0 (a.png): cosine nan < min -1.0 (undefined: an all-zero side)"]
    assert metrics[0].notes[0] == "sample 0 (a.png): cosine undefined, the RKNN output is all zeros"


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


def test_an_all_zero_side_is_nan_and_a_non_finite_norm_too_without_a_numpy_warning():
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a 0/0 or inf/inf division would warn
        assert math.isnan(cosine(np.ones(4), np.zeros(4))) and math.isnan(cosine(np.zeros(4), np.ones(4)))
        assert math.isnan(cosine(np.array([np.inf, 1.0]), np.ones(2)))
        assert math.isnan(cosine(np.ones(2), np.array([1.0, -np.inf])))


def test_the_cosine_of_unit_vectors_is_their_dot_product():
    assert cosine(np.array([1.0, 0.0]), np.array([0.6, 0.8])) == pytest.approx(0.6)
    assert cosine(np.array([0.6, 0.8]), np.array([0.0, 1.0])) == pytest.approx(0.8)


def _steps(n=10):
    return np.arange(n, dtype=np.float32).reshape(1, n)  # exact in float32, so are the differences below


def test_mean_abs_is_over_every_value_of_every_sample_that_has_an_output():
    reference = [_steps(), _steps(), _steps(), _steps()]
    got = [_steps() + 0.5, None, _steps() - 0.25, _steps()]
    metrics = compare_output("y", reference, got, ["a", "b", "c", "d"])
    assert metrics.mean_abs == (10 * 0.5 + 10 * 0.25) / 30
    assert metrics.max_abs == 0.5


def test_every_missing_and_non_finite_sample_is_counted_and_the_first_non_finite_one_named():
    reference = [_steps() for _ in range(5)]
    reference[0][0, 9] = reference[4][0, 0] = np.nan  # NaN in the reference too: not the backend's fault
    got = [_steps(), None, _steps(), None, _steps()]
    got[2][0, 1:3] = np.nan
    got[4][0, 5] = np.inf
    metrics = compare_output("y", reference, got, list("abcde"))
    assert (metrics.missing, metrics.nonfinite, metrics.nonfinite_sample, metrics.ref_nonfinite) == (2, 3, 2, 2)
    assert metrics.cosines[0] == pytest.approx(1.0)  # over the values both sides have
    assert [math.isnan(c) for c in metrics.cosines] == [False, True, True, True, True]


def test_a_mis_shaped_sample_is_named_by_its_shape_and_the_samples_after_it_are_still_compared(workdir):
    """The line names the shape that did not match, not that of a later sample that did."""
    reference = [_steps(), _steps()]
    metrics = compare_output("y", reference, [_steps().reshape(2, 5), _steps()], ["a", "b"])
    assert metrics.shape_ok is False and metrics.shape == [2, 5]
    assert evaluate(spec(workdir, {}), [metrics]) == ["output 'y': shape (2, 5) does not match the reference (1, 10)"]
    assert math.isnan(metrics.cosines[0]) and metrics.cosines[1] == pytest.approx(1.0)
    missing_first = compare_output("y", reference, [None, _steps()], ["a", "b"])
    assert missing_first.missing == 1 and missing_first.cosines[1] == pytest.approx(1.0)


def test_a_nan_cosine_in_a_later_sample_is_the_worst():
    reference = [_steps(), _steps()]
    metrics = compare_output("y", reference, [_steps()[:, ::-1], np.zeros((1, 10), np.float32)], ["a", "b"])
    assert metrics.cosines[0] < 1 and (metrics.worst_sample, metrics.worst_label) == (1, "b")
    assert math.isnan(metrics.worst_cosine)
    assert metrics.notes == ["sample 1 (b): cosine undefined, the RKNN output is all zeros"]


def test_the_note_says_when_the_reference_is_the_all_zero_side():
    metrics = compare_output("y", [np.zeros((1, 10), np.float32)], [_steps()], ["a.png"])
    assert metrics.notes == ["sample 0 (a.png): cosine undefined, the reference is all zeros"]


def test_a_single_sample_that_dropped_a_size_one_axis_is_compared_value_by_value():
    reference = [np.arange(1, 11, dtype=np.float32).reshape(1, 2, 5)]
    metrics = compare_output("y", reference, [reference[0].reshape(2, 5) * 2], ["a.png"])
    assert metrics.shape_ok and metrics.ref_shape == [1, 2, 5] and metrics.shape == [2, 5]
    assert metrics.worst_cosine == pytest.approx(1.0) and metrics.max_abs == 10.0


def test_a_backend_sample_with_fewer_outputs_than_the_model_misses_the_last_ones():
    reference = [[_steps(), _steps(4)] for _ in range(2)]
    first, second = compare_outputs(["y", "z"], reference, [[_steps(), _steps(4)], [_steps()]], ["a", "b"])
    assert (first.missing, second.missing) == (0, 1) and first.worst_cosine == pytest.approx(1.0)


def test_a_slice_of_a_sample_with_no_output_or_another_size_is_nan_and_a_dropped_axis_is_no_problem(workdir):
    features = np.arange(1, 21, dtype=np.float32).reshape(1, 10, 2)
    reference = [[_steps(), features] for _ in range(5)]
    got = [[_steps(), features.reshape(10, 2)], None, [_steps()], [_steps(), features[:, :9]], [_steps(), features]]
    part = spec(workdir, SLICED).checks.cosine.slices[1]
    measured = compare_slice(part, 1, reference, got, list("abcde"))
    assert (measured.name, measured.output, measured.worst_sample, measured.worst_label) == ("middle", "features", 1, "b")
    assert math.isnan(measured.worst_cosine)
    perfect = compare_slice(part, 1, reference, [got[0]] * 5, list("abcde"))
    assert perfect.worst_cosine == pytest.approx(1.0) and perfect.ref_range == [9.0, 12.0]


def test_after_a_missing_mis_shaped_or_non_finite_output_the_next_outputs_are_still_checked(workdir):
    reference = [[_steps()] * 4 for _ in range(3)]
    got = [[_steps(), _steps().reshape(2, 5), _steps(), _steps()[:, ::-1]] for _ in range(3)]
    got[1][0] = None
    got[2][2] = np.full((1, 10), np.nan, np.float32)
    metrics = compare_outputs(["a", "b", "c", "d"], reference, got, LABELS)
    assert evaluate(spec(workdir, {"cosine": 0.99}), metrics) == [
        "output 'a': no output for 1 of 3 samples",
        "output 'b': shape (2, 5) does not match the reference (1, 10)",
        "output 'c' sample 2: 10 NaN/Inf values where the reference is finite",
        f"output 'd' sample 0 (a.png): cosine {format_cosine(metrics[3].worst_cosine)} < min 0.99"]


def test_the_board_vs_simulator_line_prints_both_cosines_with_a_digit_more_than_their_fine_minimums(workdir):
    judged = spec(workdir, {"cosine": 0.9999999, "vs_sim_cosine": 0.99999999})
    assert evaluate(judged, [_output("logits", 0.999999951, vs_sim=0.9999999851)]) == [
        "output 'logits': board vs simulator cosine 0.999999985 < checks.vs_sim_cosine min 0.99999999, while against "
        "onnxruntime it is 0.99999995 (min 0.9999999)"]


@pytest.mark.parametrize("check", [{"cosine": {"outputs": {"logit": 0.9}}},
                                   {"vs_sim_cosine": {"outputs": {"logit": 0.9}}},
                                   {"max_abs": {"max": 1, "outputs": {"logit": 0.1}}}])
def test_a_per_output_threshold_for_an_unknown_output_names_the_field_and_the_models_outputs(workdir, check):
    judged = spec(workdir, check)
    with pytest.raises(SpecError) as info:
        evaluate(judged, [_output("logits", 1.0), _output("features", 1.0)])
    [field] = check
    assert info.value.path == judged.path
    assert info.value.message == (f"{judged.path}: checks.{field}.outputs.logit: the model has no output 'logit' "
                                  f"(its outputs are: logits, features)")


def test_a_slice_line_names_its_open_end_and_prints_a_digit_more_than_a_fine_minimum(workdir):
    checks = spec(workdir, {"cosine": {"slices": [
        {"name": "tail", "output": "features", "axis": 1, "start": 6, "min": 0.9999999},
        {"name": "head", "output": "features", "axis": 1, "stop": 4, "min": 0.9}]}})
    at_the_line = [SliceMetrics("tail", "features", 0.9999999, 0, "a.png", [0.0, 1.0]),
                   SliceMetrics("head", "features", 0.9, 0, "a.png", [0.0, 1.0])]
    assert slice_failures(checks, at_the_line) == []
    below = [SliceMetrics("tail", "features", 0.999999851, 1, "b.png", [0.0, 1.0]),
             SliceMetrics("head", "features", 0.5, 2, "c.png", [0.0, 1.0])]
    assert slice_failures(checks, below) == [
        "slice 'tail' of output 'features' (axis 1, 6:) sample 1 (b.png): cosine 0.99999985 < min 0.9999999",
        "slice 'head' of output 'features' (axis 1, 0:4) sample 2 (c.png): cosine 0.500000 < min 0.9"]
