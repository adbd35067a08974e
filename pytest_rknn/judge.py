"""The judge: a backend's outputs against the reference, then against the spec's thresholds.

measure() turns arrays into a Measurement (metrics per output; detection figures); apply() gives a
result its verdict from a measurement, made now or stored by an earlier run. Neither knows which
backend produced the arrays.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

import numpy as np

from .backends import Executed, every_sample
from .checks import evaluate, slice_failures
from .detection.check import DetectionSetup, Detections, detection_failures, map_thresholds, run_detection_check
from .errors import ACCURACY, BUILD, RknnError
from .jobdir import OVERLAYS
from .logs import error_lines, log_tail
from .measurement import Measurement
from .metrics import compare_outputs, compare_slice
from .result import RunResult
from .spec import SliceCheck, Spec


@dataclass
class Reference:
    """onnxruntime's outputs for a spec's inputs and, with checks.yolov5, its detections."""

    outputs: List[List[np.ndarray]]  # [sample][output]: onnxruntime gives every sample's
    seconds: float
    detection: Optional[Tuple[DetectionSetup, Detections]] = None


def measure(names: Sequence[str], labels: Sequence[str], reference: Reference, executed: Executed,
            simulated: Optional[Executed] = None, where: str = "", parts: Sequence[SliceCheck] = ()) -> Measurement:
    """Metrics of `executed` against the reference and, when `simulated` is given (a board), against the
    simulator; `parts`: the slices of outputs to measure on their own (checks.cosine.slices). A sample
    without outputs is BUILD, with the backend's error lines (`where` names the board)."""
    failed = [s for s, outs in enumerate(executed.outputs or []) if outs is None]
    if failed:
        errors = error_lines(executed.log_lines)
        who = "the toolkit" if simulated is None else "RKNNLite"
        detail = "; ".join(errors) if errors else f"{who} logged no error line"
        prefix = f"{where}: RKNNLite." if where else ""
        raise RknnError(BUILD, f"{prefix}inference() returned None for {len(failed)} of {len(labels)} samples "
                               f"(first: sample {failed[0]}, {labels[failed[0]]}): {detail}",
                        log_tail(executed.log_lines))
    got = every_sample(executed.outputs, executed.backend)
    outputs = compare_outputs(names, reference.outputs, got, labels)
    if simulated is not None:  # a board: its simulator job may have lost a sample that the board did not
        against = compare_outputs(names, every_sample(simulated.outputs, "the simulator"), got, labels)
        for metrics, against_sim in zip(outputs, against):
            metrics.vs_sim_cosine = against_sim.worst_cosine
    detection = None
    if reference.detection is not None and all(m.shape_ok for m in outputs):
        setup, reference_detections = reference.detection
        assert executed.job_dir is not None  # a simulator or board job
        detection = run_detection_check(setup, names, reference.outputs, reference_detections, got,
                                        Path(executed.job_dir) / OVERLAYS)
    slices = [compare_slice(part, list(names).index(part.output), reference.outputs, got, labels)
              for part in parts]
    return Measurement(outputs, detection, slices)


def apply(result: RunResult, spec: Spec, measurement: Measurement) -> None:
    """The result's metrics and verdict: the spec's thresholds and gates against the measurement."""
    result.outputs, result.detection, result.slices = measurement.outputs, measurement.detection, measurement.slices
    result.thresholds = {f"cosine.{m.name}": spec.checks.cosine.outputs.get(m.name, spec.checks.cosine.min)
                         for m in measurement.outputs}
    result.thresholds.update({f"slice_cosine.{part.name}": part.min for part in spec.checks.cosine.slices})
    failures: List[str] = evaluate(spec, measurement.outputs) + slice_failures(spec, measurement.slices)
    if measurement.detection is not None and spec.checks.yolov5 is not None:
        failures += detection_failures(spec.checks.yolov5, measurement.detection)
        result.thresholds.update(map_thresholds(spec.checks.yolov5, measurement.detection))
    result.failures = failures
    if failures:
        result.failure_class = ACCURACY
        result.message = failures[0]
        result.hints = list(measurement.hints)
