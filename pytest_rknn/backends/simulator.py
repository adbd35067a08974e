"""RKNN-Toolkit2's simulator: build, export and infer in a worker of the toolkit's environment.

A job is written to its folder (job.json, inputs.npz, the calibration list), keyed by its content,
and looked up in the result cache before a worker runs it (see result_cache.py). A hit places the
recorded `.rknn`, log and result in the folder; the outputs only when someone needs the arrays.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Union

import numpy as np

from ..errors import RknnError, SpecError
from ..jobdir import input_arrays, read_outputs, write_job
from ..logs import read_log
from ..result_cache import HIT, MISS, OFF, ResultCache, arrays_digest
from ..spec import QuantizeSpec, Spec
from ..toolkit import client
from ..toolkit.calibration import write_dataset
from ..toolkit.envs import Provisioner, ToolkitRequest
from . import Executed, Job

SIM = "sim"
ANALYSIS_FOLDER = "analysis"  # an analysis job's folder, inside the item's job folder


@dataclass
class WrittenJob:
    """A job folder ready for a worker, and its cache key (None: the cache is off or has no key)."""

    job_dir: Path
    rknn_name: str
    python: str
    key: Optional[str]


class SimulatorBackend:
    name = SIM

    def __init__(self, provisioner: Provisioner, toolkits: List[ToolkitRequest],
                 work_root: Union[Path, Callable[[], Path]], timeout: float = 600.0, toolkit_verbose: bool = False,
                 result_cache: Optional[ResultCache] = None, on_artifact: Callable[..., None] = lambda **kw: None):
        self.provisioner = provisioner
        self.toolkits = {t.version: t for t in toolkits}
        self.timeout = timeout
        self.toolkit_verbose = toolkit_verbose
        self.result_cache = result_cache or ResultCache(None)
        self.on_artifact = on_artifact
        self._work_root = work_root
        self._lock = threading.Lock()

    @property
    def work_root(self) -> Path:
        """Made on first use (a callable defers pytest's temporary directory until it is needed)."""
        with self._lock:  # two threads must not both make it
            if callable(self._work_root):
                self._work_root = Path(self._work_root())
            return self._work_root

    def write(self, job: Job) -> WrittenJob:
        """The job folder (job.json, inputs.npz, the calibration list) and its key."""
        spec, version = job.spec, job.version
        assert version is not None  # a simulator job is for one toolkit version
        python = self.provisioner.python_for(self.toolkits.get(version) or ToolkitRequest(version))
        job_dir = self.work_root / job_folder(spec) / version
        job_dir.mkdir(parents=True, exist_ok=True)
        description: Dict[str, Any] = {
            "model": str(spec.model_path),
            "target": spec.target,
            "config": spec.convert.config_kwargs(),
            "quantize": isinstance(spec.convert.quantize, QuantizeSpec),
            "dataset": write_dataset(spec, job.model, job_dir, self.result_cache.images_folder),
            "rknn_name": f"{spec.name}.rknn",
            "verbose": self.toolkit_verbose,
        }
        write_job(job_dir, description, job.inputs)
        digest = arrays_digest(input_arrays(job.inputs)) if self.result_cache.enabled else None
        key = self.result_cache.key_for(python, job_dir, digest, job.model)
        return WrittenJob(job_dir, description["rknn_name"], python, key)

    def run(self, job: Job, written: Optional[WrittenJob] = None, recorded: Optional[Executed] = None) -> Executed:
        """The job's outputs: from the result cache, or from a worker (and then stored). With `recorded`
        (what recorded() placed), only the outputs are added, while the entry is still there."""
        written = written or self.write(job)
        started = time.monotonic()
        if recorded is not None and self.result_cache.load_outputs(written.key, written.job_dir):
            outputs = read_outputs(written.job_dir, len(job.inputs), [])
            return Executed(SIM, outputs, written.job_dir, recorded.result, recorded.log_lines,
                            recorded.seconds + time.monotonic() - started)
        cached = self.result_cache.load(written.key, written.job_dir, written.rknn_name)
        if cached is None:
            with self.result_cache.running(written.key):
                cached = self.result_cache.load(written.key, written.job_dir, written.rknn_name)  # stored meanwhile?
                if cached is None:
                    result = client.run_worker(written.python, written.job_dir, job.spec.timeout or self.timeout,
                                               f"rknn-toolkit2 {job.version}")
                    self.result_cache.store(written.key, written.job_dir, result)  # a successful job only
                    result["cache"] = MISS if written.key else OFF
        if cached is not None:
            result = dict(cached, cache=HIT)
        if result["status"] == "SPEC":
            raise SpecError(job.spec.path, result["field"], result["message"])
        outputs = read_outputs(written.job_dir, len(job.inputs), result.get("failed_samples", []))
        self._built(job, written, result)
        return Executed(SIM, outputs, written.job_dir, result, read_log(written.job_dir), time.monotonic() - started)

    def recorded(self, job: Job, written: WrittenJob) -> Optional[Executed]:
        """On a cache hit, the recorded .rknn, log and result in the job folder, without the outputs
        (outputs None: nobody has asked for the arrays); None on a miss."""
        started = time.monotonic()
        cached = self.result_cache.load(written.key, written.job_dir, written.rknn_name, outputs=False)
        if cached is None:
            return None
        result = dict(cached, cache=HIT)
        self._built(job, written, result)
        return Executed(SIM, None, written.job_dir, result, read_log(written.job_dir), time.monotonic() - started)

    def analyse(self, job: Job, written: WrittenJob, sample: int, timeout: float) -> Path:
        """The toolkit's per-layer accuracy analysis of one sample (accuracy_analysis after a build of its
        own, in JOB/analysis/ on a worker of the pool): the path of its error_analysis.txt, or an RknnError
        with the class (TIMEOUT past `timeout`, CRASH, BUILD when the analysis itself fails). The result cache
        keeps error_analysis.txt per job and sample, so a failing item that is a cache hit starts no worker."""
        folder = written.job_dir / ANALYSIS_FOLDER
        table = f"{ANALYSIS_FOLDER}/{client.ANALYSIS_TABLE}"
        key = None if written.key is None else \
            hashlib.sha256(f"{written.key}\0accuracy_analysis\0{sample}".encode()).hexdigest()
        if self.result_cache.load_measurement(key, written.job_dir) is not None:
            return written.job_dir / table
        folder.mkdir(exist_ok=True)
        paths = []
        for i, (array, layout) in enumerate(zip(job.inputs.samples[sample], job.inputs.layouts)):
            if layout == "nhwc":  # accuracy_analysis wants NCHW .npy files even for an NHWC model
                array = np.ascontiguousarray(np.transpose(array, (0, 3, 1, 2)))
            path = folder / f"input{i}.npy"
            np.save(path, array)
            paths.append(str(path))
        description = json.loads((written.job_dir / "job.json").read_text())
        description["analyse"] = {"sample": sample, "inputs": paths}
        (folder / "job.json").write_text(json.dumps(description, indent=1))
        try:
            result = client.run_worker(written.python, folder, timeout, f"rknn-toolkit2 {job.version} accuracy_analysis")
        except RknnError as exc:  # a timeout here is the analysis's own limit, not the job's
            exc.message = exc.message.replace("raise --rknn-timeout or the spec's `timeout:`",
                                              "raise --rknn-localise-timeout")
            raise
        if result["status"] != "ok":  # SPEC cannot happen here: the same config built before
            raise RuntimeError(f"accuracy_analysis ended with status {result['status']}")
        self.result_cache.store_measurement(key, {"analysis": table, "sample": sample}, written.job_dir, [table])
        return written.job_dir / table

    def _built(self, job: Job, written: WrittenJob, result: dict) -> None:
        self.on_artifact(spec=job.spec, version=job.version, rknn_path=written.job_dir / result["rknn"],
                         sha256=result["rknn_sha256"])

    def close(self) -> None:
        """Kill the toolkit workers, busy ones too: a thread running a job then gets it classified CRASH."""
        client.close_workers()


def job_folder(spec: Spec) -> str:
    """`NAME-HASH`: readable, and two specs of the same name in different folders never share one."""
    key = f"{spec.path}\0{spec.config_hash()}".encode()
    return f"{spec.name}-{hashlib.sha256(key).hexdigest()[:8]}"
