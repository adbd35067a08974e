"""Build and simulate models inside a toolkit environment.

Run with the toolkit environment's Python, in one of two ways:
  python worker.py JOB_DIR          one job, then exit. The caller sends this process's stdout
                                    and stderr, toolkit noise included, to log.txt.
  python worker.py --serve FD       job after job: read a job folder per line (a JSON string) from
                                    stdin, run it with fd 1 and 2 pointed at that job's log.txt, then
                                    write `exit N` (N: what a one-job process would exit with) on the
                                    control pipe FD. The toolkit is imported once, during the first job.
It needs only the standard library, numpy and rknn-toolkit2; it never imports pytest_rknn.

In:  job.json, inputs.npz (keys s{sample}_i{input})
Out: result.json, outputs.npz (keys s{sample}_o{output}), the .rknn file, log.txt.

An analysis job (job.json has `"analyse": {"sample": N, "inputs": [NCHW .npy paths]}`) builds the same
way, then runs the toolkit's per-layer accuracy_analysis instead of export and inference: out come
result.json (`analysis`: the error_analysis.txt path, relative to the job folder), log.txt and the
toolkit's folder ANALYSIS_DIR (its per-layer tensor dumps removed unless the job is verbose).
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
import traceback

STEP_MARK = "[pytest-rknn] step:"
ANALYSIS_DIR = "toolkit"  # accuracy_analysis's output_dir, inside an analysis job's folder
ANALYSIS_DUMPS = ("golden", "simulator")  # every layer's tensor as text: large, and only a person reads them


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
    result: dict = {"status": "ok", "timings": {}}
    result_path = os.path.join(job_dir, "result.json")

    def finish(status, **fields):
        result.update(status=status, **fields)
        write_json_atomic(result_path, result)
        return 0

    started = time.monotonic()
    step("import")
    import warnings

    warnings.filterwarnings("ignore", message="pkg_resources is deprecated")  # the toolkit's, not the user's
    import numpy  # noqa: F401 (timed with the toolkit, which needs it too)
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

    rknn = RKNN(verbose=True)  # only a verbose build prints the layer table; the host keeps the debug lines or not
    try:
        return build_and_simulate(rknn, job, config, job_dir, result, finish)
    finally:
        rknn.release()  # a served worker keeps running: nothing of this job may stay behind


def build_and_simulate(rknn, job, config, job_dir, result, finish):
    import numpy as np

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
    if job.get("analyse"):  # the analysis needs the build in this process, not the exported file
        steps = steps[:3]
    for name, fn, kwargs in steps:
        failure = call(name, fn, **kwargs)
        if failure != 0:
            return finish("BUILD", **failure)
        if name == "export_rknn":
            result["rknn"] = job["rknn_name"]
            result["rknn_sha256"] = sha256_of(kwargs["export_path"])
    if job.get("analyse"):
        return analyse(rknn, job, job_dir, call, finish)

    step("inference")
    formats = job["data_format"]
    outputs = {}
    failed = []
    t0 = time.monotonic()
    with np.load(os.path.join(job_dir, "inputs.npz")) as data:
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
    np.savez(tmp, **outputs)  # type: ignore[arg-type]  # mypy: a **dict might fill allow_pickle
    os.replace(tmp, os.path.join(job_dir, "outputs.npz"))
    result["failed_samples"] = failed
    return finish("ok")


def analyse(rknn, job, job_dir, call, finish):
    """The toolkit's per-layer analysis of one sample against its own float run (target None: the
    simulator). Its .npy inputs must be NCHW, whatever the model's data format; the host writes them so."""
    import shutil

    output_dir = os.path.join(job_dir, ANALYSIS_DIR)
    shutil.rmtree(output_dir, ignore_errors=True)
    failure = call("accuracy_analysis", rknn.accuracy_analysis, inputs=list(job["analyse"]["inputs"]),
                   output_dir=output_dir, target=None)
    if failure != 0:
        return finish("BUILD", **failure)
    table = os.path.join(ANALYSIS_DIR, "error_analysis.txt")
    if not os.path.isfile(os.path.join(job_dir, table)):
        return finish("BUILD", step="accuracy_analysis", exception="the toolkit wrote no error_analysis.txt")
    if not job.get("verbose"):
        for dumps in ANALYSIS_DUMPS:
            shutil.rmtree(os.path.join(output_dir, dumps), ignore_errors=True)
    return finish("ok", analysis=table, sample=job["analyse"].get("sample"))


# ---------------------------------------------------------------- serve mode


def serve(control_fd):
    """Run the jobs named on stdin, one per line, until stdin closes."""
    os.set_inheritable(control_fd, False)  # nothing the toolkit starts may hold the host's pipe open
    control = os.fdopen(control_fd, "w", buffering=1)
    jobs = os.fdopen(os.dup(0), "r")  # the job list; the toolkit itself gets /dev/null as stdin
    quiet = os.open(os.devnull, os.O_RDWR)
    os.dup2(quiet, 0)
    for line in jobs:
        job_dir = json.loads(line)
        status = run_with_output_in_log(job_dir, quiet)
        control.write(f"exit {status}\n")


def run_with_output_in_log(job_dir, quiet):
    """run(job_dir) with fd 1 and 2 (C-level prints included) in the job's log.txt and the job
    folder as the current directory, as for a one-job process; the status that process would exit with."""
    log = os.open(os.path.join(job_dir, "log.txt"), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    point_output_at(log)
    os.close(log)
    os.chdir(job_dir)
    try:
        return run(job_dir)
    except SystemExit as exc:
        return exit_status(exc)
    except BaseException:  # as an uncaught exception would: its traceback in the log, status 1
        traceback.print_exc()
        return 1
    finally:
        point_output_at(quiet)  # between jobs, whatever is printed goes nowhere


def point_output_at(fd):
    flush_all_output()
    os.dup2(fd, 1)
    os.dup2(fd, 2)


def flush_all_output():
    """Python's and C's buffers, so nothing of one job is written into the next job's log."""
    sys.stdout.flush()
    sys.stderr.flush()
    import ctypes

    ctypes.CDLL(None).fflush(None)


def exit_status(exc):
    if exc.code is None:
        return 0
    if isinstance(exc.code, int):
        return exc.code & 0xFF  # as the process's exit status: sys.exit(-1) is 255, not a signal
    print(exc.code, file=sys.stderr)
    return 1


if __name__ == "__main__":
    if sys.argv[1] == "--serve":
        serve(int(sys.argv[2]))
    else:
        sys.exit(run(sys.argv[1]))
