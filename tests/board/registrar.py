"""pytest plugin for runs against the test board (`-p registrar`, with tests/board on PYTHONPATH).

Every .rknn file that pytest-rknn builds is registered with the rknnlite double: its sha256
names the ONNX model and the normalisation the double must apply, so the double can compute
what the NPU would, and the job folder the simulator ran in, so that for the same input arrays
the double returns the simulator's outputs, as a board running the same arithmetic does. The
registry is the JSON file named by RKNNLITE_DOUBLE_REGISTRY in the pytest process's environment.
Writes are atomic and serialised with flock, so xdist workers and the test process can write at
the same time.
"""

import fcntl
import json
import os
from pathlib import Path


def update_registry(path, change):
    """Apply `change(data)` to the registry at `path` under an exclusive lock, then replace the
    file atomically: readers see the old or the new registry, never half of one."""
    path = Path(path)
    with open(f"{path}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            try:
                data = json.loads(path.read_text())
            except FileNotFoundError:
                data = {}
            data.setdefault("models", {})
            data.setdefault("faults", {})
            change(data)
            tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(data, indent=1))
            os.replace(tmp, path)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _op_types(model_path):
    import onnx

    return sorted({node.op_type for node in onnx.load(str(model_path), load_external_data=False).graph.node})


def pytest_rknn_artifact_built(spec, version, rknn_path, sha256):
    registry = os.environ.get("RKNNLITE_DOUBLE_REGISTRY")
    if not registry:
        return
    entry = {"onnx": str(Path(spec.model_path).resolve()),
             "mean_values": spec.convert.mean_values,
             "std_values": spec.convert.std_values,
             "apply_mean_std": bool(spec.reference.apply_mean_std),
             "toolkit_version": str(version),
             "target_platform": getattr(spec, "target", None),
             "simulated": str(Path(rknn_path).resolve().parent),  # its inputs.npz and outputs.npz
             "op_types": _op_types(spec.model_path)}  # for the double's faults by op type (set_op_fault)
    update_registry(registry, lambda data: data["models"].__setitem__(sha256, entry))
