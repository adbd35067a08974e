"""Build and simulate one model inside a toolkit environment.

Run as `python worker.py JOB_DIR` with the toolkit environment's Python. It needs
only the standard library, numpy and rknn-toolkit2; it never imports pytest_rknn.

In:  job.json, inputs.npz (keys s{sample}_i{input})
Out: result.json, outputs.npz (keys s{sample}_o{output}), the .rknn file.
The caller sends this process's stdout and stderr, toolkit noise included, to log.txt.
"""

import difflib
import hashlib
import importlib.metadata
import inspect
import json
import os
import re
import sys
import time

STEP_MARK = "[pytest-rknn] step:"


def step(name):
    # The caller reads the last step mark to say where a crash happened.
    print(f"{STEP_MARK} {name}", flush=True)


def installed_versions(*names):
    versions = {}
    for name in names:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return versions


def write_json_atomic(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle, indent=1)
    os.replace(tmp, path)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def exception_text(exc):
    """One line for an exception. The toolkit re-raises with the inner traceback as the
    message; the inner `XxxError: ...` and what follows it is the reason."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if re.match(r"^\w+(Error|Exception):", line)]
    if starts:
        return " ".join(lines[starts[-1]:])
    return f"{type(exc).__name__}: {' '.join(lines)}"


def unknown_config_keys(rknn_cls, config):
    """Keys that the installed rknn.config does not name. It takes **kwargs, so a
    misspelt key would otherwise be swallowed silently."""
    params = inspect.signature(rknn_cls.config).parameters
    known = [n for n, p in params.items() if n != "self" and p.kind != p.VAR_KEYWORD]
    problems = []
    for key in config:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1)
            hint = f"did you mean `{close[0]}`?" if close else "see the toolkit's rknn.config reference"
            problems.append((key, hint))
    return problems


def run(job_dir):
    with open(os.path.join(job_dir, "job.json")) as handle:
        job = json.load(handle)
    result = {"status": "ok", "timings": {}}
    result_path = os.path.join(job_dir, "result.json")

    def finish(status, **fields):
        result.update(status=status, **fields)
        write_json_atomic(result_path, result)
        return 0

    started = time.monotonic()
    step("import")
    import warnings

    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # the toolkit's, not the user's
    import numpy as np
    from rknn.api import RKNN

    result["toolkit_version"] = importlib.metadata.version("rknn-toolkit2")
    result["env"] = {"python": sys.version.split()[0], **installed_versions("onnx", "onnxruntime", "torch", "numpy")}
    result["timings"]["import"] = time.monotonic() - started
    print(f"[pytest-rknn] rknn-toolkit2 {result['toolkit_version']}, python {sys.version.split()[0]}", flush=True)

    config = dict(job["config"])
    unknown = unknown_config_keys(RKNN, config)
    if unknown:
        key, hint = unknown[0]
        return finish("SPEC", step="config", field=f"convert.{key}",
                      message=f"rknn-toolkit2 {result['toolkit_version']} has no rknn.config parameter '{key}'; {hint}")

    rknn = RKNN(verbose=bool(job.get("verbose")))

    def call(name, fn, **kwargs):
        """0 on success; otherwise the failure for result.json. The API documents -1 on
        failure, but some errors (e.g. NonZero on a non-constant input) escape as exceptions."""
        step(name)
        t0 = time.monotonic()
        try:
            ret = fn(**kwargs)
        except Exception as exc:
            return {"step": name, "exception": exception_text(exc)}
        finally:
            result["timings"][name] = time.monotonic() - t0
        return 0 if ret == 0 else {"step": name}

    steps = [
        ("config", rknn.config, dict(target_platform=job["target"], **config)),
        ("load_onnx", rknn.load_onnx, dict(model=job["model"])),
        ("build", rknn.build, dict(do_quantization=job["quantize"], dataset=job.get("dataset"))),
        ("export_rknn", rknn.export_rknn, dict(export_path=os.path.join(job_dir, job["rknn_name"]))),
        ("init_runtime", rknn.init_runtime, dict(target=None)),
    ]
    for name, fn, kwargs in steps:
        failure = call(name, fn, **kwargs)
        if failure != 0:
            return finish("BUILD", **failure)
        if name == "export_rknn":
            result["rknn"] = job["rknn_name"]
            result["rknn_sha256"] = sha256_of(kwargs["export_path"])

    step("inference")
    data = np.load(os.path.join(job_dir, "inputs.npz"))
    formats = job["data_format"]
    outputs = {}
    failed = []
    t0 = time.monotonic()
    for s in range(job["samples"]):
        arrays = [data[f"s{s}_i{i}"] for i in range(len(formats))]
        print(f"[pytest-rknn] inference sample {s}", flush=True)
        outs = rknn.inference(inputs=arrays, data_format=formats)
        if outs is None:
            failed.append(s)
            continue
        for k, out in enumerate(outs):
            outputs[f"s{s}_o{k}"] = np.asarray(out)
    result["timings"]["inference"] = time.monotonic() - t0
    tmp = os.path.join(job_dir, "outputs.tmp.npz")
    np.savez(tmp, **outputs)
    os.replace(tmp, os.path.join(job_dir, "outputs.npz"))
    rknn.release()
    result["failed_samples"] = failed
    return finish("ok")


if __name__ == "__main__":
    sys.exit(run(sys.argv[1]))
