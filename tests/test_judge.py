"""The judge in-process: measure() turns a backend's arrays into metrics, apply() gives a result its
verdict; a measurement's record round trip; the digest of a labels file or folder in its key."""

import hashlib
import json
import math

import numpy as np
import pytest
from PIL import Image

from pytest_rknn import measurement
from pytest_rknn.backends import Executed
from pytest_rknn.detection.check import DetectionMetrics, DetectionSetup, detect
from pytest_rknn.errors import ACCURACY, BUILD, RknnError
from pytest_rknn.judge import Reference, apply, measure
from pytest_rknn.measurement import Measurement
from pytest_rknn.metrics import cosine
from pytest_rknn.result import OutputMetrics, RunResult, SliceMetrics
from pytest_rknn.spec import SliceCheck, YoloV5Check, spec_from_dict

LABELS = ["a.png", "b.png", "c.png"]
NAMES = ["features", "logits"]
RNG = np.random.default_rng(21)
REF = [[RNG.standard_normal((1, 8)).astype(np.float32), RNG.standard_normal((1, 10)).astype(np.float32)]
       for _ in LABELS]


def noisy(samples, scale, seed):
    rng = np.random.default_rng(seed)
    return [[o + scale * rng.standard_normal(o.shape).astype(np.float32) for o in sample] for sample in samples]


def sim(outputs, job_dir=None, log_lines=()):
    return Executed("sim", outputs, job_dir, log_lines=list(log_lines))


def spec(tmp_path, checks):
    (tmp_path / "m.onnx").touch()
    return spec_from_dict({"model": "m.onnx", "checks": checks}, base_dir=tmp_path)


def worst(pairs):
    return min(cosine(got, ref) for got, ref in pairs)


# ---------------------------------------------------------------- measure: no output is BUILD


TOOLKIT_LOG = ["I rknn-toolkit2 version: 2.3.2", "E RKNN: [10:11:12.121] Invalid tensor 'x'", "W something",
               "E build: the toolkit gave up"]


def test_a_sample_the_toolkit_returned_none_for_is_build_with_its_count_first_sample_and_error_lines():
    executed = sim([REF[0], None, None], log_lines=TOOLKIT_LOG)
    with pytest.raises(RknnError) as caught:
        measure(NAMES, LABELS, Reference(REF, 0.1), executed)
    assert caught.value.failure_class == BUILD
    assert caught.value.message == ("inference() returned None for 2 of 3 samples (first: sample 1, b.png): "
                                    "E RKNN: Invalid tensor 'x'; E build: the toolkit gave up")
    assert caught.value.log_tail == "\n".join(TOOLKIT_LOG)


def test_without_an_error_line_the_message_says_who_logged_none():
    with pytest.raises(RknnError) as caught:
        measure(NAMES, LABELS, Reference(REF, 0.1), sim([None, REF[1], REF[2]], log_lines=["I done"]))
    assert caught.value.message == ("inference() returned None for 1 of 3 samples (first: sample 0, a.png): "
                                    "the toolkit logged no error line")
    board = Executed("board", [REF[0], REF[1], None], log_lines=[])
    with pytest.raises(RknnError) as caught:
        measure(NAMES, LABELS, Reference(REF, 0.1), board, sim(REF), where="board 10.0.0.5")
    assert caught.value.failure_class == BUILD
    assert caught.value.message == ("board 10.0.0.5: RKNNLite.inference() returned None for 1 of 3 samples "
                                    "(first: sample 2, c.png): RKNNLite logged no error line")


def test_a_board_sample_without_outputs_names_rknnlite_and_its_error_lines():
    board = Executed("board", [None, REF[1], REF[2]], log_lines=["E RKNN: failed to submit!"])
    with pytest.raises(RknnError) as caught:
        measure(NAMES, LABELS, Reference(REF, 0.1), board, sim(REF))
    assert caught.value.message == ("inference() returned None for 1 of 3 samples (first: sample 0, a.png): "
                                    "E RKNN: failed to submit!")


def test_a_simulator_that_lost_a_sample_the_board_ran_is_build_naming_the_simulator():
    board = Executed("board", REF)
    with pytest.raises(RknnError) as caught:
        measure(NAMES, LABELS, Reference(REF, 0.1), board, sim([REF[0], REF[1], None]), where="board x")
    assert (caught.value.failure_class, caught.value.message) == (
        BUILD, "the simulator: inference() returned None for 1 of 3 samples (first: sample 2)")


def test_outputs_that_were_never_loaded_are_refused_not_measured_as_no_samples():
    with pytest.raises(ValueError, match=r"^sim: its outputs were not loaded$"):
        measure(NAMES, LABELS, Reference(REF, 0.1), sim(None))


# ---------------------------------------------------------------- measure: metrics


def test_a_simulator_item_is_measured_against_the_reference_per_output_with_no_board_figure():
    got = noisy(REF, 0.05, 1)
    measured = measure(NAMES, LABELS, Reference(REF, 0.1), sim(got))
    assert [m.name for m in measured.outputs] == NAMES
    for k, metrics in enumerate(measured.outputs):
        assert metrics.worst_cosine == pytest.approx(worst((g[k], r[k]) for g, r in zip(got, REF)))
        assert metrics.vs_sim_cosine is None
    assert (measured.detection, measured.slices, measured.hints) == (None, [], [])


def test_a_board_item_gets_its_cosine_against_the_simulators_outputs_per_output():
    simulated = noisy(REF, 0.3, 2)  # far from onnxruntime
    board = noisy(simulated, 0.01, 3)  # close to the simulator
    measured = measure(NAMES, LABELS, Reference(REF, 0.1), Executed("board", board), sim(simulated), "board x")
    for k, metrics in enumerate(measured.outputs):
        assert metrics.worst_cosine == pytest.approx(worst((b[k], r[k]) for b, r in zip(board, REF)))
        assert metrics.vs_sim_cosine == pytest.approx(worst((b[k], s[k]) for b, s in zip(board, simulated)))
        assert metrics.vs_sim_cosine > 0.999 > metrics.worst_cosine
    assert measured.outputs[0].vs_sim_cosine != measured.outputs[1].vs_sim_cosine


def test_a_slice_is_measured_on_the_output_it_names():
    got = [[ref[0], ref[1].copy()] for ref in REF]  # features exact: a slice of output 0 would read 1.0
    got[1][1][0, :4] += np.float32(0.8)
    part = SliceCheck(name="head", output="logits", stop=4)
    measured = measure(NAMES, LABELS, Reference(REF, 0.1), sim(got), parts=[part])
    [sliced] = measured.slices
    head = [r[1][0, :4] for r in REF]
    assert sliced == SliceMetrics("head", "logits", pytest.approx(cosine(got[1][1][0, :4], head[1])), 1, "b.png",
                                  [float(np.min(head)), float(np.max(head))])
    assert sliced.worst_cosine < 0.99


# ---------------------------------------------------------------- measure: detection

CLASSES = 1
HEADS = [(1, 3 * (5 + CLASSES), 64 // s, 64 // s) for s in (8, 16, 32)]


def one_object(found=True):
    """Three heads of a 64x64 one-class detector with one confident box on the stride-8 head."""
    heads = [np.zeros(shape, np.float32) for shape in HEADS]
    if found:
        heads[0][0, 0:6, 3, 3] = [0.5, 0.5, 0.5, 0.5, 0.9, 0.9]
    return heads


@pytest.fixture
def detector(tmp_path):
    paths = []
    for name in LABELS[:2]:
        Image.new("RGB", (64, 64), (90, 90, 90)).save(tmp_path / name)
        paths.append(str(tmp_path / name))
    setup = DetectionSetup(YoloV5Check(overlays=1), "heads", (64, 64), False, paths, None, None, CLASSES)
    reference = [one_object(), one_object()]
    return Reference(reference, 0.1, (setup, detect(setup, reference)))


def test_detection_counts_each_images_boxes_against_onnxruntimes_and_draws_the_worst_in_the_job_folder(tmp_path,
                                                                                                        detector):
    job = tmp_path / "job"
    measured = measure(["p3", "p4", "p5"], LABELS[:2], detector, sim([one_object(), one_object(False)], job))
    figures = measured.detection
    assert figures.counts == [("a.png", 1, 1), ("b.png", 0, 1)]
    assert 0.0 < figures.agreement_map50 < 1.0
    assert figures.overlays == [str(job / "overlays" / "00_b.png")] and (job / "overlays" / "00_b.png").is_file()
    same = measure(["p3", "p4", "p5"], LABELS[:2], detector, sim([one_object(), one_object()], job))
    assert same.detection.agreement_map50 == 1.0


def test_detection_is_skipped_when_any_output_has_the_wrong_shape(tmp_path, detector):
    wrong = [one_object(), one_object()]
    for sample in wrong:
        sample[2] = np.zeros((1, 18, 2, 3), np.float32)  # one head of three
    measured = measure(["p3", "p4", "p5"], LABELS[:2], detector, sim(wrong, tmp_path / "job"))
    assert [m.shape_ok for m in measured.outputs] == [True, True, False]
    assert measured.detection is None and not (tmp_path / "job").exists()


# ---------------------------------------------------------------- apply

GATES = {"cosine": {"min": 0.99, "outputs": {"logits": 0.9999},
                    "slices": [{"name": "boxes", "output": "logits", "stop": 4, "min": 0.95}]},
         "yolov5": {"count_tolerance": 0, "min_agreement_map50": 0.8}}


def figures(features, logits, boxes, counts, agreement):
    outputs = [OutputMetrics(name=name, ref_shape=[1, 10], samples=1, cosines=[value], worst_cosine=value,
                             worst_label="a.png", max_abs=0.01) for name, value in (("features", features),
                                                                                    ("logits", logits))]
    detection = DetectionMetrics("heads", counts, agreement_map50=agreement)
    return Measurement(outputs, detection, [SliceMetrics("boxes", "logits", boxes, 0, "a.png", [0.0, 1.0])],
                       ["the int8 build rounds the boxes away"])


def test_every_gate_at_its_line_passes_and_keeps_no_class_message_or_hints(tmp_path):
    measured = figures(0.99, 0.9999, 0.95, [("a.png", 2, 2)], 0.8)
    result = RunResult(spec="s", version="2.3.2", backend="sim")
    apply(result, spec(tmp_path, GATES), measured)
    assert (result.failure_class, result.message, result.failures, result.hints) == (None, "", [], [])
    assert result.thresholds == {"cosine.features": 0.99, "cosine.logits": 0.9999, "slice_cosine.boxes": 0.95,
                                 "agreement_map50": 0.8}
    assert (result.outputs, result.detection, result.slices) == (measured.outputs, measured.detection,
                                                                 measured.slices)


def test_failures_of_outputs_slices_and_detection_come_together_and_the_first_is_the_message(tmp_path):
    measured = figures(0.995, 0.9998, 0.9499, [("a.png", 1, 2)], 0.7999)
    result = RunResult(spec="s", version="2.3.2", backend="sim")
    apply(result, spec(tmp_path, GATES), measured)
    assert result.failures == [
        "output 'logits' sample 0 (a.png): cosine 0.999800 < min 0.9999",
        "slice 'boxes' of output 'logits' (axis -1, 0:4) sample 0 (a.png): cosine 0.949900 < min 0.95",
        "yolov5: detection counts differ by more than 0 on 1 of 1 images (RKNN vs onnxruntime: a.png: 1 vs 2); "
        "agreement mAP@0.5 with onnxruntime 0.7999",
        "yolov5: agreement mAP@0.5 with onnxruntime 0.7999 < min_agreement_map50 0.8; agreement mAP@0.5 with "
        "onnxruntime 0.7999"]
    assert (result.failure_class, result.message) == (ACCURACY, result.failures[0])
    assert result.hints == ["the int8 build rounds the boxes away"]
    assert result.thresholds["agreement_map50"] == 0.8


def test_a_failing_slice_alone_fails_the_result(tmp_path):
    result = RunResult(spec="s", version="2.3.2", backend="sim")
    apply(result, spec(tmp_path, GATES), figures(0.99, 0.9999, 0.9, [("a.png", 2, 2)], 1.0))
    assert result.failure_class == ACCURACY and result.message.startswith("slice 'boxes' ")


def test_detection_figures_are_gated_only_with_a_yolov5_check_and_a_check_needs_figures(tmp_path):
    """A measurement with detection figures judged by a spec without checks.yolov5 keeps the figures but no
    gate; a spec with the check and no figures (an output of the wrong shape failed already) adds none."""
    measured = figures(0.999, 0.99999, 0.99, [("a.png", 0, 9)], 0.0)
    result = RunResult(spec="s", version="2.3.2", backend="sim")
    apply(result, spec(tmp_path, {"cosine": GATES["cosine"]}), measured)
    assert result.passed and result.detection is measured.detection
    assert set(result.thresholds) == {"cosine.features", "cosine.logits", "slice_cosine.boxes"}
    measured.detection = None
    result = RunResult(spec="s", version="2.3.2", backend="sim")
    apply(result, spec(tmp_path, GATES), measured)
    assert result.passed and "agreement_map50" not in result.thresholds


# ---------------------------------------------------------------- a measurement's stored record


def stored_figures(job_dir):
    nan, inf = float("nan"), float("inf")
    output = OutputMetrics(name="logits", ref_shape=[1, 10], samples=2, shape=[10], cosines=[nan, 0.5],
                           worst_cosine=nan, worst_sample=0, worst_label="a.png", max_abs=inf, mean_abs=0.25,
                           vs_sim_cosine=0.999, notes=["sample 0 (a.png): cosine undefined, the reference is all zeros"])
    detection = DetectionMetrics("heads", [("a.png", 1, 2), ("b.png", 0, 0)], map50=0.5, map=0.3, ref_map50=0.6,
                                 ref_map=0.4, agreement_map50=0.7, agreement_map=0.5,
                                 slice_cosines={"p3": {"boxes": nan, "objectness": 0.99}},
                                 overlays=[str(job_dir / "overlays" / "00_a.png")], seconds=1.5)
    parts = [SliceMetrics("boxes", "logits", nan, 1, "b.png", [-inf, 3.0]),
             SliceMetrics("scores", "logits", 0.25, 0, "a.png", [0.0, inf])]
    return Measurement([output], detection, parts, ["a hint"])


def test_a_stored_measurement_read_back_under_a_new_job_folder_is_the_one_written(tmp_path):
    """NaN and infinities come back as floats, detection counts as tuples, the pictures under the new folder."""
    old, new = tmp_path / "old", tmp_path / "new"
    written = stored_figures(old)
    assert written.files(old) == ["overlays/00_a.png"]
    record = json.loads(json.dumps(written.stored_record(old), allow_nan=False))
    assert record["detection"]["overlays"] == ["overlays/00_a.png"]
    assert written.detection.overlays == [str(old / "overlays" / "00_a.png")]  # the measurement is left as it was
    read = Measurement.from_record(record, new)
    expected = stored_figures(new)
    assert repr(read) == repr(expected)  # repr: NaN is not equal to itself, and 'nan' the string reads apart
    assert math.isnan(read.outputs[0].worst_cosine) and read.slices[0].ref_range[0] == -math.inf


def finite_output(name, label="a.png", notes=()):
    return OutputMetrics(name=name, ref_shape=[1, 10], samples=1, cosines=[0.95], worst_cosine=0.95,
                         worst_label=label, max_abs=0.1, mean_abs=0.05, notes=list(notes))


def test_a_measurement_without_detection_has_no_files_and_reads_back_equal(tmp_path):
    written = Measurement([finite_output("logits")])
    assert written.files(tmp_path) == [] and written.stored_record(tmp_path)["detection"] is None
    assert Measurement.from_record(json.loads(json.dumps(written.stored_record(tmp_path))), tmp_path) == written


def test_outputs_images_and_samples_named_nan_or_inf_keep_their_names_as_text(tmp_path):
    """Only the figures come back as floats: a model output named 'inf' is still judged by its own
    threshold from a stored measurement (it crashed the judge: a float name)."""
    written = Measurement([finite_output("inf", label="nan", notes=["-inf"])],
                          DetectionMetrics("heads", [("-inf", 1, 1)], agreement_map50=1.0, agreement_map=1.0,
                                           slice_cosines={"inf": {"boxes": 1.0}}),
                          [SliceMetrics("nan", "inf", 0.5, 0, "nan", [0.0, 1.0])], ["inf"])
    read = Measurement.from_record(json.loads(json.dumps(written.stored_record(tmp_path))), tmp_path)
    assert read == written
    result = RunResult(spec="s", version="2.3.2", backend="sim")
    apply(result, spec(tmp_path, {"cosine": {"min": 0.99, "outputs": {"inf": 0.9}}}), read)
    assert result.passed and result.thresholds == {"cosine.inf": 0.9}


def test_a_stored_figure_that_is_not_a_number_makes_the_record_unusable(tmp_path):
    """ValueError, so the runner measures again instead of judging a word (a TypeError, an internal error)."""
    record = json.loads(json.dumps(Measurement([finite_output("logits")]).stored_record(tmp_path)))
    record["outputs"][0]["worst_cosine"] = "high"
    with pytest.raises(ValueError):
        Measurement.from_record(record, tmp_path)


@pytest.mark.parametrize("record, message", [
    ({"format": 1, "outputs": [], "detection": None, "slices": [], "hints": []}, "measurement format 1, not 2"),
    ({"outputs": []}, "measurement format None, not 2"),
])
def test_a_record_of_another_format_is_refused(tmp_path, record, message):
    with pytest.raises(ValueError) as caught:
        Measurement.from_record(record, tmp_path)
    assert str(caught.value) == message


# ---------------------------------------------------------------- the labels' digest in the key


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_the_labels_digest_is_a_files_or_every_file_under_a_folder_by_relative_path(tmp_path):
    (tmp_path / "labels" / "more").mkdir(parents=True)
    (tmp_path / "labels" / "empty").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    (tmp_path / "labels" / "more" / "b.txt").write_text("")
    assert measurement._tree_digest(tmp_path / "labels" / "a.txt") == {"": sha(tmp_path / "labels" / "a.txt")}
    assert measurement._tree_digest(tmp_path / "labels") == {"a.txt": sha(tmp_path / "labels" / "a.txt"),
                                                             "more/b.txt": sha(tmp_path / "labels" / "more" / "b.txt")}
    assert measurement._tree_digest(tmp_path / "missing.json") is None


def test_a_detector_spec_whose_inputs_are_not_image_files_still_has_a_measurement_key(tmp_path):
    """Its spec error (checks.yolov5 needs an image input) comes later, from the detection setup."""
    detector = spec(tmp_path, {"yolov5": {}})
    assert len(measurement.key("j" * 64, detector, ["random[0]"], [None])) == 64
