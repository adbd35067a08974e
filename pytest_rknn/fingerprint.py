"""What produced a result: the versions of the host side (reference, metrics) and of this plugin."""

from __future__ import annotations

import functools
import importlib.metadata
import platform
from typing import Dict


@functools.lru_cache(maxsize=None)
def host_versions() -> Dict[str, str]:
    """Python and the packages that compute the reference and the metrics on this machine."""
    versions = {"python": platform.python_version()}
    for name in ("pytest-rknn", "onnx", "onnxruntime", "numpy", "pycocotools"):
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions
