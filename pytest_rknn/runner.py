"""Runs a spec for one toolkit version and backend: inputs, reference, worker, metrics, checks.

The reference runs once per spec (per distinct per-version spec), the worker once per
(spec, version); both are cached for the session so every backend compares the same arrays.
The caches are safe from threads: a job the scheduler runs ahead and the item that needs it
share one computation per key (see `_once`).
"""

from __future__ import annotations

import copy
import hashlib
import threading
import time
from concurrent.futures import Future
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Tuple, Union

import numpy as np

from .board.preflight import check_target
from .board.session import BoardPool
from .checks import evaluate
from .comparisons import Comparisons
from .detection.check import DetectionSetup, Detections, detect, run_detection_check
from .detection.check import setup as detection_setup
from .early_checks import check_before_build
from .errors import ACCURACY, BUILD, CRASH, SPEC, TIMEOUT, RknnError, SpecError
from .fingerprint import host_versions
from .inputs import InputSet, prepare_inputs
from .jobdir import read_outputs, write_job
from .logs import error_lines, log_tail, read_log
from .metrics import compare_outputs
from .onnx_model import ModelInfo, read_model_info
from .reference import run_reference
from .result import RunResult, format_cosine
from .result_cache import HIT, MISS, OFF, ResultCache
from .spec import PYTHON_SPEC, QuantizeSpec, Spec, load_spec, spec_from_dict, spec_name
from .toolkit.calibration import write_dataset
from .toolkit import client
from .toolkit.envs import Provisioner, ToolkitRequest

SIM = "sim"
BOARD = "board"
BLAMED = (CRASH, TIMEOUT, BUILD, ACCURACY)  # board failures whose message says: the conversion or the runtime?
WAIT_MARGIN_SECONDS = 600.0  # beyond a job's own timeout, when waiting for another thread's job: provisioning, reference


@dataclass
class Prepared:
    """What every backend of one spec shares."""

    model: ModelInfo
    inputs: InputSet
    reference: List[List[np.ndarray]]
    seconds: float
    detection: Optional[Tuple[DetectionSetup, Detections]] = None  # with checks.yolov5: setup, onnxruntime's


@dataclass
class Executed:
    """What a backend produced for all samples of one (spec, version)."""

    job_dir: Path
    result: dict
    outputs: List[Optional[List[np.ndarray]]]  # [sample][output]; None where inference returned None
    log_lines: List[str]


class RknnRunner:
    def __init__(self, provisioner: Provisioner, toolkits: List[ToolkitRequest],
                 work_root: Union[Path, Callable[[], Path]], timeout: float = 600.0, toolkit_verbose: bool = False,
                 boards: Optional[BoardPool] = None, on_artifact: Callable[..., None] = lambda **kw: None,
                 comparisons: Optional[Comparisons] = None, result_cache: Optional[ResultCache] = None):
        self.provisioner = provisioner
        self.result_cache = result_cache or ResultCache(None)  # None: off
        self.comparisons = comparisons
        self.boards = boards or BoardPool([], None)
        self.on_artifact = on_artifact
        self.toolkits = {t.version: t for t in toolkits}
        self._work_root = work_root
        self.timeout = timeout
        self.toolkit_verbose = toolkit_verbose
        # One Future per key, resolved to the value or a _Failure; see _once.
        self._prepared: Dict[Tuple[str, str], Future] = {}
        self._simulated: Dict[Tuple[str, str, str], Future] = {}
        self._on_board: Dict[Tuple[str, str, str], Future] = {}
        self._measured: Dict[Tuple[str, str, str, str], Future] = {}
        self._lock = threading.Lock()  # guards the caches' dicts and work_root, never held during a computation

    @property
    def work_root(self) -> Path:
        """Made on first use (a callable defers pytest's temporary directory until it is needed)."""
        with self._lock:  # two threads must not both make it
            if callable(self._work_root):
                self._work_root = Path(self._work_root())
            return self._work_root

    @property
    def versions(self) -> List[str]:
        return list(self.toolkits)

    @property
    def backends(self) -> List[str]:
        return [SIM, BOARD] if self.boards else [SIM]

    def close(self) -> None:
        """End of session: kill the toolkit workers, clean up the boards (work dirs, leftover processes)."""
        client.close_workers()
        self.boards.close()

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
                if self.comparisons.updating_baseline:  # a file that cannot be read is not overwritten
                    self.comparisons.baseline.check_readable(result.spec, result.spec_path)
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
        try:
            spec_v = spec.for_version(version)
            result.fingerprint["config_hash"] = spec_v.metrics_config_hash()
            result.fingerprint["target"] = spec_v.target
            prepared = self.prepare(spec_v)
            result.fingerprint["model_sha256"] = prepared.model.sha256
            result.timings["reference"] = prepared.seconds
            simulated = self.simulate(spec_v, prepared, version)
            result.rknn_path = simulated.job_dir / simulated.result["rknn"]
            result.rknn_sha256 = simulated.result["rknn_sha256"]
            result.toolkit_version = simulated.result["toolkit_version"]
            result.fingerprint.update(rknn_sha256=result.rknn_sha256, toolkit_version=result.toolkit_version,
                                      toolkit_env=simulated.result.get("env", {}))
            result.timings.update(simulated.result["timings"])
            result.cache = simulated.result.get("cache", OFF)
            executed = simulated
            if backend == BOARD:
                simulator_verdict = self.measure(spec, version, SIM)  # cached: the sim item's own result
                executed = self.run_on_board(spec_v, prepared, simulated, version)
                result.board = executed.result.get("board")
                result.fingerprint["board"] = result.board
                result.warnings += executed.result.get("warnings", [])
                result.timings.update({f"board_{k}": v for k, v in executed.result.get("timings", {}).items()})
            result.log_path = executed.job_dir / "log.txt"
            self._judge(result, spec_v, prepared, executed, simulated)
        except Exception as exc:  # an RknnError, or a bug (INTERNAL, with its traceback)
            result.fail_with(exc)
        if simulator_verdict is not None and result.failure_class in BLAMED:
            result.message += "; " + _blame(simulator_verdict, result)
        return result

    def stop_workers(self) -> None:
        """Kill the toolkit workers, busy ones too (at the end of the session or after Ctrl-C): the
        threads running jobs ahead then end, with the job classified CRASH."""
        client.close_workers()

    def build_ahead(self, spec: Spec, version: str) -> None:
        """The simulator job of (spec, version), done before its item asks (the scheduler calls this
        from a thread of its own). Its item then finds the answer, or the failure, in the caches."""
        try:
            spec_v = spec.for_version(version)
            self.simulate(spec_v, self.prepare(spec_v), version)
        except Exception:  # cached: the item raises it again, with its traceback
            pass

    # ------------------------------------------------------------ stages

    def prepare(self, spec: Spec) -> Prepared:
        key = (str(spec.path), spec.config_hash())
        return self._once(self._prepared, key, lambda: self._prepare(spec), spec)

    def _prepare(self, spec: Spec) -> Prepared:
        started = time.monotonic()
        try:
            model = read_model_info(spec.model_path)
        except Exception as exc:  # onnx raises DecodeError and friends for a file that is not a model
            raise SpecError(spec.path, "model", f"{spec.model_path.name} is not a readable ONNX model: "
                                                f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
                            "point `model:` at an .onnx file") from None
        check_before_build(spec, model, self.versions, self.comparisons and self.comparisons.compare_to)
        inputs = prepare_inputs(spec, model)
        reference = run_reference(spec, model, inputs)
        detection = None
        if spec.checks.yolov5 is not None:
            setup = detection_setup(spec, model, inputs, [o.shape for o in reference[0]])
            detection = (setup, detect(setup, reference))
        return Prepared(model, inputs, reference, time.monotonic() - started, detection)

    def simulate(self, spec: Spec, prepared: Prepared, version: str) -> Executed:
        key = (str(spec.path), spec.config_hash(), version)
        return self._once(self._simulated, key, lambda: self._simulate(spec, prepared, version), spec)

    def _simulate(self, spec: Spec, prepared: Prepared, version: str) -> Executed:
        request = self.toolkits.get(version) or ToolkitRequest(version)
        python = self.provisioner.python_for(request)
        job_dir = self.work_root / _job_folder(spec) / version
        job_dir.mkdir(parents=True, exist_ok=True)
        job = {
            "model": str(spec.model_path),
            "target": spec.target,
            "config": spec.convert.config_kwargs(),
            "quantize": isinstance(spec.convert.quantize, QuantizeSpec),
            "dataset": write_dataset(spec, prepared.model, job_dir),
            "rknn_name": f"{spec.name}.rknn",
            "verbose": self.toolkit_verbose,
        }
        write_job(job_dir, job, prepared.inputs)
        what = f"rknn-toolkit2 {version}"
        key = self.result_cache.key_for(python, job_dir)
        cached = self.result_cache.load(key, job_dir, job["rknn_name"])
        result = cached or client.run_worker(python, job_dir, spec.timeout or self.timeout, what)
        if cached is None:
            self.result_cache.store(key, job_dir, result)  # a successful job only
        result["cache"] = HIT if cached else MISS if key else OFF
        if result["status"] == "SPEC":
            raise SpecError(spec.path, result["field"], result["message"])
        outputs = read_outputs(job_dir, len(prepared.inputs), result.get("failed_samples", []))
        self.on_artifact(spec=spec, version=version, rknn_path=job_dir / result["rknn"], sha256=result["rknn_sha256"])
        return Executed(job_dir, result, outputs, read_log(job_dir))

    def run_on_board(self, spec: Spec, prepared: Prepared, simulated: Executed, version: str) -> Executed:
        """The exact artifact the simulator ran, on a board, with the same inputs."""
        key = (str(spec.path), spec.config_hash(), version)
        return self._once(self._on_board, key, lambda: self._run_on_board(spec, prepared, simulated, version), spec)

    def _run_on_board(self, spec: Spec, prepared: Prepared, simulated: Executed, version: str) -> Executed:
        session = self.boards.session_for(f"{spec.name}/{version}")
        check_target(session.start(), spec.target)
        job_dir = simulated.job_dir.parent / f"{version}-board"
        write_job(job_dir, {}, prepared.inputs)
        rknn_path = simulated.job_dir / simulated.result["rknn"]
        result = session.run_job(job_dir, rknn_path, simulated.result["rknn_sha256"], version)
        result["board"] = session.info.fingerprint()
        outputs = read_outputs(job_dir, len(prepared.inputs), result.get("failed_samples", []))
        return Executed(job_dir, result, outputs, read_log(job_dir))

    def _once(self, cache: Dict[tuple, Future], key: tuple, compute: Callable[[], object], spec: Spec):
        """compute() once per key, whichever thread asks first; a thread that asks while another
        computes waits for that answer (at most the spec's job timeout plus WAIT_MARGIN_SECONDS).
        A failure is cached too, so a spec that fails fails every item fast and the same way."""
        with self._lock:
            future = cache.get(key)
            mine = future is None
            if mine:
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

    def _judge(self, result: RunResult, spec: Spec, prepared: Prepared, executed: Executed,
               simulated: Executed) -> None:
        """Metrics and checks of `executed` against onnxruntime; for a board item, also against
        the simulator."""
        names = [t.name for t in prepared.model.outputs]
        labels = prepared.inputs.labels
        result.outputs = compare_outputs(names, prepared.reference, executed.outputs, labels)
        result.thresholds = {f"cosine.{n}": spec.checks.cosine.outputs.get(n, spec.checks.cosine.min) for n in names}
        failed = [s for s, outs in enumerate(executed.outputs) if outs is None]
        if failed:
            errors = error_lines(executed.log_lines)
            who = "the toolkit" if executed is simulated else "RKNNLite"
            detail = "; ".join(errors) if errors else f"{who} logged no error line"
            where = f"board {result.board['address']}: RKNNLite." if executed is not simulated else ""
            raise RknnError(BUILD, f"{where}inference() returned None for {len(failed)} of {len(labels)} samples "
                                   f"(first: sample {failed[0]}, {labels[failed[0]]}): {detail}",
                            log_tail(executed.log_lines))
        if executed is not simulated:
            vs_sim = compare_outputs(names, simulated.outputs, executed.outputs, labels)
            for metrics, against_sim in zip(result.outputs, vs_sim):
                metrics.vs_sim_cosine = against_sim.worst_cosine
        result.failures = evaluate(spec, result.outputs)
        if prepared.detection is not None and all(m.shape_ok for m in result.outputs):
            setup, reference_detections = prepared.detection
            result.detection, failures = run_detection_check(setup, names, prepared.reference, reference_detections,
                                                             executed.outputs, executed.job_dir / "overlays")
            result.failures += failures
        if result.failures:
            result.failure_class = ACCURACY
            result.message = result.failures[0]


def _blame(simulator_verdict: RunResult, result: RunResult) -> str:
    """Say whether the conversion or the board runtime broke a board item: the simulator item's own
    verdict (cosine and detection checks alike) decides."""
    board_vs_sim = ", ".join(f"{m.name} {format_cosine(m.vs_sim_cosine)}" for m in result.outputs)
    measured = any(m.vs_sim_cosine is not None for m in result.outputs)  # not when the board gave no outputs
    cosines = f" (board vs simulator cosine: {board_vs_sim})" if measured else ""
    if not simulator_verdict.passed:
        return f"the simulator fails too, so the conversion broke it{cosines}"
    return f"the simulator passes, so the board runtime broke it{cosines}"


def _job_folder(spec: Spec) -> str:
    """`NAME-HASH`: readable, and two specs of the same name in different folders never share one."""
    key = f"{spec.path}\0{spec.config_hash()}".encode()
    return f"{spec.name}-{hashlib.sha256(key).hexdigest()[:8]}"


def spec_label(spec) -> str:
    """The name of a spec given as a path or a dict, even one that cannot be read."""
    if isinstance(spec, Spec):
        return spec.name
    if isinstance(spec, (str, Path)):
        return spec_name(Path(spec))
    return Path(str(spec.get("model", "spec"))).stem if isinstance(spec, dict) else "spec"


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
