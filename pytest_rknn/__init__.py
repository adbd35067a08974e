"""pytest-rknn: check RKNN-Toolkit2 conversions against onnxruntime, per toolkit version."""

from .errors import RknnError, RknnWarning, SpecError
from .result import OutputMetrics, RunResult
from .spec import Spec, load_spec

__all__ = ["RknnError", "RknnWarning", "SpecError", "OutputMetrics", "RunResult", "Spec", "load_spec"]
