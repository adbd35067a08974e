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
import sys
import time

STEP_MARK = "[pytest-rknn] step:"


def step(name):
    # The caller reads the last step mark to say where a crash happened.
    print(f"{STEP_MARK} {name}", flush=True)


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
    import numpy as np
    from rknn.api import RKNN

    result["toolkit_version"] = importlib.metadata.version("rknn-toolkit2")
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
        step(name)
        t0 = time.monotonic()
        ret = fn(**kwargs)
        result["timings"][name] = time.monotonic() - t0
        return ret

    if call("config", rknn.config, target_platform=job["target"], **config) != 0:
        return finish("BUILD", step="config")
    if call("load_onnx", rknn.load_onnx, model=job["model"]) != 0:
        return finish("BUILD", step="load_onnx")
    if call("build", rknn.build, do_quantization=job["quantize"], dataset=job.get("dataset")) != 0:
        return finish("BUILD", step="build")
    rknn_path = os.path.join(job_dir, job["rknn_name"])
    if call("export_rknn", rknn.export_rknn, export_path=rknn_path) != 0:
        return finish("BUILD", step="export_rknn")
    result["rknn"] = job["rknn_name"]
    result["rknn_sha256"] = sha256_of(rknn_path)
    if call("init_runtime", rknn.init_runtime, target=None) != 0:
        return finish("BUILD", step="init_runtime")

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
