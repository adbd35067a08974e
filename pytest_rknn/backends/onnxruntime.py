"""The reference: the ONNX model in onnxruntime, on exactly the arrays the NPU gets."""

from __future__ import annotations

import time

from ..reference import run_reference
from . import Executed, Job

ONNXRUNTIME = "onnxruntime"


class OnnxRuntimeBackend:
    name = ONNXRUNTIME

    def run(self, job: Job) -> Executed:
        started = time.monotonic()
        outputs = run_reference(job.spec, job.model, job.inputs)
        return Executed(ONNXRUNTIME, outputs, seconds=time.monotonic() - started)

    def close(self) -> None:
        pass
