"""Runs a spec for one toolkit version and backend: stage the inputs, run the backends, judge.

The stages of a spec are computed once per key and shared by its items: the inputs per spec (per
distinct per-version spec), onnxruntime's reference per spec, the simulator job per (spec, version),
the board job per (spec, version), the judged result per item. They are safe from threads: a job
the scheduler runs ahead and the item that needs it share one computation per key (see `_once`).

With the result cache on, a simulator item whose job and measurement are both stored is judged
from the stored measurement: no worker, no onnxruntime (see measurement.py).
"""

from __future__ import annotations

import copy
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

from . import judge, measurement
from .backends import Executed, Job, every_sample
from .backends.board import BOARD, BoardBackend
from .backends.onnxruntime import OnnxRuntimeBackend
from .backends.simulator import SIM, SimulatorBackend, WrittenJob
from .board.session import BoardPool
from .checks import latency_failures, placement_failures
from .comparisons import Comparisons
from .detection.check import detect
from .detection.check import setup as detection_setup
from .diagnosis.hints import hints_for
from .diagnosis.localise import localise as localise_failure
from .diagnosis.profile import build_profile
from .diagnosis.reduce import DEFAULT_BUDGET_SECONDS as REDUCE_BUDGET_SECONDS
from .early_checks import check_before_build
from .failure_evidence import FailureEvidence
from .errors import ACCURACY, BUILD, CRASH, PERFORMANCE, PLACEMENT, SPEC, TIMEOUT, RknnError, SpecError
from .fingerprint import host_versions
from .logs import log_tail
from .inputs import InputSet, prepare_inputs
from .judge import Reference
from .onnx_model import ModelInfo, model_info
from .result import RunResult, format_cosine
from .result_cache import HIT, MISS, OFF, ResultCache
from .spec import PYTHON_SPEC, Spec, load_spec, spec_from_dict, spec_name
from .toolkit.envs import Provisioner, ToolkitRequest

BLAMED = (CRASH, TIMEOUT, BUILD, ACCURACY)  # board failures whose message says: the conversion or the runtime?
LOCALISE_TIMEOUT_SECONDS = 300.0  # the per-layer analysis of a failed item: its own build, then accuracy_analysis
WAIT_MARGIN_SECONDS = 600.0  # beyond a job's own timeout, when waiting for another thread's job: provisioning, reference


@dataclass
class Staged:
    """What every backend of one spec gets: the model's facts and the input arrays."""

    model: ModelInfo
    inputs: InputSet
    seconds: float

    def job(self, spec: Spec, version: Optional[str] = None, artifact: Optional[Executed] = None) -> Job:
        return Job(spec, self.model, self.inputs, version, artifact)


class RknnRunner:
    def __init__(self, provisioner: Provisioner, toolkits: List[ToolkitRequest],
                 work_root: Union[Path, Callable[[], Path]], timeout: float = 600.0, toolkit_verbose: bool = False,
                 boards: Optional[BoardPool] = None, on_artifact: Callable[..., None] = lambda **kw: None,
                 comparisons: Optional[Comparisons] = None, result_cache: Optional[ResultCache] = None,
                 keep_outputs: bool = False, localise: bool = True,
                 localise_timeout: float = LOCALISE_TIMEOUT_SECONDS, reduce_budget: float = REDUCE_BUDGET_SECONDS):
        self.result_cache = result_cache or ResultCache(None)  # None: off
        self.localise = localise  # an ACCURACY failure gets the toolkit's per-layer analysis (--rknn-no-localise: off)
        self.localise_timeout = localise_timeout
        self.evidence = FailureEvidence(self, reduce_budget)  # a failed item's reduction and repro bundle
        self.keep_outputs = keep_outputs  # --rknn-keep-outputs: every job folder gets its arrays, hits too
        self.comparisons = comparisons
        self.toolkits = {t.version: t for t in toolkits}
        self.onnxruntime = OnnxRuntimeBackend()
        self.simulator = SimulatorBackend(provisioner, toolkits, work_root, timeout, toolkit_verbose,
                                          self.result_cache, on_artifact)
        self.board = BoardBackend(boards or BoardPool([], None))
        # One Future per key, resolved to the value or a _Failure; see _once.
        self._staged: Dict[Tuple[str, str], Future] = {}
        self._references: Dict[Tuple[str, str], Future] = {}
        self._written: Dict[Tuple[str, str, str], Future] = {}
        self._recorded: Dict[Tuple[str, str, str], Future] = {}
        self._simulated: Dict[Tuple[str, str, str], Future] = {}
        self._on_board: Dict[Tuple[str, str, str], Future] = {}
        self._measured: Dict[Tuple[str, str, str, str], Future] = {}
        self._lock = threading.Lock()  # guards the caches' dicts, never held during a computation

    @property
    def work_root(self) -> Path:
        return self.simulator.work_root

    @property
    def timeout(self) -> float:
        return self.simulator.timeout

    @property
    def versions(self) -> List[str]:
        return list(self.toolkits)

    @property
    def backends(self) -> List[str]:
        return [SIM, BOARD] if self.board else [SIM]

    def close(self) -> None:
        """End of session: kill the toolkit workers, clean up the boards (work dirs, leftover processes)."""
        self.simulator.close()
        self.board.close()

    # ------------------------------------------------------------ public

    def run(self, spec: Union[Spec, str, Path, dict], version: Optional[str] = None, backend: str = SIM) -> RunResult:
        """Run one (spec, version, backend) and return its result. With a baseline or --rknn-compare-to,
        the result is also compared against those. Never raises: whatever goes wrong, a bug of ours
        included, is the result's class and message."""
        version = version or self.versions[0]
        try:
            spec = _as_spec(spec)
        except Exception as exc:
            result = RunResult(spec=spec_label(spec), version=version, backend=backend, spec_path=_path_of(spec))
            result.fail_with(exc)
            return result
        result = self.measure(spec, version, backend)
        if self.comparisons is not None and result.metrics():
            try:
                self.comparisons.apply(spec.for_version(version), result,
                                       lambda other: self.measure(spec, other, backend))
                baseline = self.comparisons.baseline
                if self.comparisons.updating_baseline and baseline is not None:  # an unreadable file is not overwritten
                    baseline.check_readable(result.spec, result.spec_path)
            except Exception as exc:
                result.fail_with(exc)
        return result

    def measure(self, spec: Union[Spec, str, Path, dict], version: str, backend: str = SIM) -> RunResult:
        """The result judged by the spec's own checks only; a fresh copy of a cached result."""
        spec = _as_spec(spec)
        key = (str(spec.path), spec.config_hash(), version, backend)
        return copy.deepcopy(self._once(self._measured, key, lambda: self._measure(spec, version, backend), spec))

    def _measure(self, spec: Spec, version: str, backend: str) -> RunResult:
        result = RunResult(spec=spec.name, version=version, backend=backend,
                           spec_path=spec.path if spec.path != PYTHON_SPEC else None)
        result.fingerprint["host"] = host_versions()
        simulator_verdict = None  # board items: the sim item's own result, once the board is reached
        staged = None  # the inputs, once staged: a failure after that gets its evidence (failure_evidence.py)
        try:
            spec_v = spec.for_version(version)
            result.fingerprint["config_hash"] = spec_v.metrics_config_hash()
            result.fingerprint["target"] = spec_v.target
            staged = self.stage(spec_v)
            result.fingerprint["model_sha256"] = staged.model.sha256
            if backend == BOARD:
                simulator_verdict = self.measure(spec, version, SIM)  # cached: the sim item's own result
                self._measure_on_board(result, spec_v, staged, version)
            else:
                self._measure_in_simulator(result, spec_v, staged, version)
        except Exception as exc:  # an RknnError, or a bug (INTERNAL, with its traceback)
            result.fail_with(exc)
        if simulator_verdict is not None and result.failure_class in BLAMED:
            result.message += "; " + _blame(simulator_verdict, result)
        if staged is not None and not result.passed:
            self.evidence.gather(result, spec_v, staged, version, backend)
        return result

    def _measure_in_simulator(self, result: RunResult, spec: Spec, staged: Staged, version: str) -> None:
        """From the stored measurement of a recorded job when there is one, else measured now."""
        written = self.write_job(spec, staged, version)
        key = measurement.key(written.key, spec, staged.inputs.labels, staged.inputs.image_paths)
        recorded = self.recorded(spec, staged, version) if key else None
        stored = self.result_cache.load_measurement(key, written.job_dir) if recorded else None
        measured = _restored(stored, written.job_dir)
        if measured is not None and recorded is not None:  # stored: only with recorded
            executed = recorded
            result.measurement_cache = HIT
        else:
            reference = self.reference(spec, staged)
            executed = self.simulate(spec, staged, version)
            result.timings["reference"] = reference.seconds
            measured = judge.measure(_names(staged), staged.inputs.labels, reference, executed,
                                     parts=spec.checks.cosine.slices)
            measured.hints = hints_for(spec, staged.model, staged.inputs, reference, measured)
            self.result_cache.store_measurement(key, measured.stored_record(written.job_dir), written.job_dir,
                                                measured.files(written.job_dir))
            result.measurement_cache = MISS if key else OFF
        self._record_artifact(result, executed)
        result.profile = build_profile(executed.result.get("layers"), staged.model, result.rknn_path,
                                       executed.result["timings"].get("build"))
        judge.apply(result, spec, measured)
        result.add_failures(placement_failures(spec, result.profile, f"rknn-toolkit2 {result.toolkit_version}"),
                            PLACEMENT)
        _keep_log_tail(result, executed)
        if self.localise and result.failure_class == ACCURACY:  # where it diverges: evidence, never the verdict
            job = staged.job(spec, version)
            localise_failure(result, lambda sample: self.simulator.analyse(job, written, sample, self.localise_timeout))
        if executed.outputs is None and (self.keep_outputs or not result.passed):  # arrays a person may open
            self.result_cache.load_outputs(written.key, written.job_dir)

    def _measure_on_board(self, result: RunResult, spec: Spec, staged: Staged, version: str) -> None:
        """The board's outputs against onnxruntime and the simulator; never cached (the board is what is tested)."""
        reference = self.reference(spec, staged)
        result.timings["reference"] = reference.seconds
        simulated = self.simulate(spec, staged, version)
        self._record_artifact(result, simulated)
        executed = self.run_on_board(spec, staged, simulated, version)
        result.board = executed.result.get("board")
        result.fingerprint["board"] = result.board
        result.warnings += executed.result.get("warnings", [])
        result.timings.update({f"board_{k}": v for k, v in executed.result.get("timings", {}).items()})
        assert executed.job_dir is not None  # a board job has its folder
        result.log_path = executed.job_dir / "log.txt"
        result.latency = executed.result.get("latency")
        where = f"board {result.board['address']}" if result.board else "board"
        measured = judge.measure(_names(staged), staged.inputs.labels, reference, executed, simulated, where,
                                 spec.checks.cosine.slices)
        measured.hints = hints_for(spec, staged.model, staged.inputs, reference, measured)
        judge.apply(result, spec, measured)
        result.add_failures(latency_failures(spec, result.latency), PERFORMANCE)
        _keep_log_tail(result, executed)

    def _record_artifact(self, result: RunResult, simulated: Executed) -> None:
        """The simulator job's .rknn, toolkit, timings and log in the result."""
        result.rknn_path = simulated.rknn_path
        result.rknn_sha256 = simulated.result["rknn_sha256"]
        result.toolkit_version = simulated.result["toolkit_version"]
        result.fingerprint.update(rknn_sha256=result.rknn_sha256, toolkit_version=result.toolkit_version,
                                  toolkit_env=simulated.result.get("env", {}))
        result.timings.update(simulated.result["timings"])
        result.cache = simulated.result.get("cache", OFF)
        assert simulated.job_dir is not None  # a simulator job has its folder
        result.log_path = simulated.job_dir / "log.txt"

    def stop_workers(self) -> None:
        """Kill the toolkit workers, busy ones too (at the end of the session or after Ctrl-C): the
        threads running jobs ahead then end, with the job classified CRASH."""
        self.simulator.close()

    def build_ahead(self, spec: Spec, version: str) -> None:
        """The simulator item of (spec, version), judged before it asks (the scheduler calls this from a
        thread of its own). Its item then finds the answer, or the failure, in the caches."""
        try:
            self.measure(spec, version, SIM)
        except Exception:  # cached: the item raises it again, with its traceback
            pass

    # ------------------------------------------------------------ stages

    def stage(self, spec: Spec) -> Staged:
        key = (str(spec.path), spec.config_hash())
        return self._once(self._staged, key, lambda: self._stage(spec), spec)

    def _stage(self, spec: Spec) -> Staged:
        started = time.monotonic()
        try:
            model = model_info(spec.model_path, self.result_cache.models_folder)
        except Exception as exc:  # onnx raises DecodeError and friends for a file that is not a model
            raise SpecError(spec.path, "model", f"{spec.model_path.name} is not a readable ONNX model: "
                                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                            "point `model:` at an .onnx file") from None
        check_before_build(spec, model, self.versions, self.comparisons.compare_to if self.comparisons else None)
        inputs = prepare_inputs(spec, model, self.result_cache.images_folder)
        return Staged(model, inputs, time.monotonic() - started)

    def reference(self, spec: Spec, staged: Staged) -> Reference:
        key = (str(spec.path), spec.config_hash())
        return self._once(self._references, key, lambda: self._reference(spec, staged), spec)

    def _reference(self, spec: Spec, staged: Staged) -> Reference:
        executed = self.onnxruntime.run(staged.job(spec))
        outputs = every_sample(executed.outputs, "onnxruntime")
        detection = None
        if spec.checks.yolov5 is not None:
            setup = detection_setup(spec, staged.model, staged.inputs, [o.shape for o in outputs[0]])
            detection = (setup, detect(setup, outputs))
        return Reference(outputs, executed.seconds, detection)

    def write_job(self, spec: Spec, staged: Staged, version: str) -> WrittenJob:
        key = (str(spec.path), spec.config_hash(), version)
        return self._once(self._written, key, lambda: self.simulator.write(staged.job(spec, version)), spec)

    def recorded(self, spec: Spec, staged: Staged, version: str) -> Optional[Executed]:
        """The simulator job as the result cache recorded it, without its outputs; None on a miss."""
        key = (str(spec.path), spec.config_hash(), version)
        return self._once(self._recorded, key, lambda: self.simulator.recorded(
            staged.job(spec, version), self.write_job(spec, staged, version)), spec)

    def simulate(self, spec: Spec, staged: Staged, version: str) -> Executed:
        key = (str(spec.path), spec.config_hash(), version)
        return self._once(self._simulated, key, lambda: self._simulate(spec, staged, version), spec)

    def _simulate(self, spec: Spec, staged: Staged, version: str) -> Executed:
        written = self.write_job(spec, staged, version)
        with self._lock:  # what recorded() placed, if it ran: then only the outputs are added
            recorded = self._recorded.get((str(spec.path), spec.config_hash(), version))
        known = recorded.result() if recorded is not None and recorded.done() else None
        return self.simulator.run(staged.job(spec, version), written, known if isinstance(known, Executed) else None)

    def run_on_board(self, spec: Spec, staged: Staged, simulated: Executed, version: str) -> Executed:
        """The exact artifact the simulator ran, on a board, with the same inputs."""
        key = (str(spec.path), spec.config_hash(), version)
        return self._once(self._on_board, key, lambda: self.board.run(staged.job(spec, version, simulated)), spec)

    def _once(self, cache: Dict[tuple, Future], key: tuple, compute: Callable[[], object], spec: Spec):
        """compute() once per key, whichever thread asks first; a thread that asks while another
        computes waits for that answer (at most the spec's job timeout plus WAIT_MARGIN_SECONDS).
        A failure is cached too, so a spec that fails fails every item fast and the same way."""
        with self._lock:
            future = cache.get(key)
            mine = future is None
            if future is None:
                future = cache[key] = Future()
        if mine:
            try:
                future.set_result(_cached_call(compute))
            except BaseException as exc:  # Ctrl-C in this thread: the next asker computes it again
                with self._lock:
                    del cache[key]
                future.set_result(_Failure(RknnError(TIMEOUT, f"interrupted ({type(exc).__name__})")))
                raise
        limit = (spec.timeout or self.timeout) + WAIT_MARGIN_SECONDS
        try:
            value = future.result(timeout=limit)
        except FutureTimeout:
            raise RknnError(TIMEOUT, f"{spec.name}: no answer after waiting {limit:g} s for the job that another "
                                     f"thread runs (raise --rknn-timeout or the spec's `timeout:`)") from None
        return _unwrap(value)


def _blame(simulator_verdict: RunResult, result: RunResult) -> str:
    """Say whether the conversion or the board runtime broke a board item: the simulator item's own
    verdict (cosine and detection checks alike) decides."""
    board_vs_sim = ", ".join(f"{m.name} {format_cosine(m.vs_sim_cosine)}" for m in result.outputs)
    measured = any(m.vs_sim_cosine is not None for m in result.outputs)  # not when the board gave no outputs
    cosines = f" (board vs simulator cosine: {board_vs_sim})" if measured else ""
    if not simulator_verdict.passed:
        return f"the simulator fails too, so the conversion broke it{cosines}"
    return f"the simulator passes, so the board runtime broke it{cosines}"


def spec_label(spec) -> str:
    """The name of a spec given as a path or a dict, even one that cannot be read."""
    if isinstance(spec, Spec):
        return spec.name
    if isinstance(spec, (str, Path)):
        return spec_name(Path(spec))
    return Path(str(spec.get("model", "spec"))).stem if isinstance(spec, dict) else "spec"


def _keep_log_tail(result: RunResult, executed: Executed) -> None:
    """A failure judged from the arrays (ACCURACY, PLACEMENT, PERFORMANCE) shows its log tail too."""
    if not result.passed and result.log_tail is None:
        result.log_tail = log_tail(executed.log_lines)


def _names(staged: Staged) -> List[str]:
    return [t.name for t in staged.model.outputs]


def _restored(record: Optional[dict], job_dir: Path) -> Optional[measurement.Measurement]:
    """A stored measurement, or None when there is none or it is of another shape (then it is measured again)."""
    if record is None:
        return None
    try:
        return measurement.Measurement.from_record(record, job_dir)
    except (KeyError, TypeError, ValueError, AttributeError):
        return None


def _path_of(spec) -> Optional[Path]:
    return Path(spec).resolve() if isinstance(spec, (str, Path)) else None


def _as_spec(spec: Union[Spec, str, Path, dict]) -> Spec:
    if isinstance(spec, dict):
        return spec_from_dict(spec)
    if isinstance(spec, Spec):
        return spec
    if not isinstance(spec, (str, Path)):
        raise RknnError(SPEC, f"the spec given to rknn.run() or @pytest.mark.rknn_spec is {spec!r} "
                              f"({type(spec).__name__}); give a path to a *.rknn.yaml file or a dict")
    return load_spec(spec)


class _Failure:
    """A cached exception, raised again with the traceback it first had."""

    def __init__(self, exc: Exception):
        self.exc, self.traceback = exc, exc.__traceback__


def _cached_call(fn):
    """Call fn; cache a failure too, so a spec that fails fails every item fast and the same way."""
    try:
        return fn()
    except Exception as exc:
        return _Failure(exc)


def _unwrap(value):
    if isinstance(value, _Failure):
        raise value.exc.with_traceback(value.traceback)
    return value
