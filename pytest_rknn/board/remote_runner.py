"""Runs on the board. Standard library, numpy and rknn-toolkit-lite2 only; uploaded once
per session and never imported by pytest_rknn itself.

  python3 remote_runner.py preflight            -> one JSON line: versions, SoC
  python3 remote_runner.py run JOB_DIR SECONDS  -> supervises one job (below) in its own
                                                   process group, killed as a group on timeout
  python3 remote_runner.py job JOB_DIR          -> load_rknn, init_runtime, inference for all samples

In JOB_DIR: job.json, inputs.npz (s{sample}_i{input}), the .rknn file.
Out: result.json, outputs.npz (s{sample}_o{output}), log.txt.
"""

import hashlib
import json
import os
import re
import signal
import subprocess
import sys
import time

STEP_MARK = "[pytest-rknn] step:"
DEVICE_TREE = os.environ.get("RKNN_BOARD_DEVICE_TREE", "/proc/device-tree")
LIBRKNNRT_CANDIDATES = ["/usr/lib/librknnrt.so", "/usr/lib64/librknnrt.so", "/usr/local/lib/librknnrt.so",
                        "/usr/lib/aarch64-linux-gnu/librknnrt.so"]
DRIVER_VERSION_FILES = ["/sys/kernel/debug/rknpu/version", "/proc/debug/rknpu/version"]


def write_json_atomic(path, data):
    tmp = f"{path}.tmp"
    with open(tmp, "w") as handle:
        json.dump(data, handle)
    os.replace(tmp, path)


def sha256_of(path):
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ------------------------------------------------------------------ preflight


def read_text(path):
    try:
        with open(path, "rb") as handle:
            return handle.read().decode(errors="replace")
    except OSError:
        return None


def librknnrt_version():
    paths = [os.environ["RKNN_BOARD_LIBRKNNRT"]] if os.environ.get("RKNN_BOARD_LIBRKNNRT") else LIBRKNNRT_CANDIDATES
    for path in paths:
        text = read_text(path)
        if text:
            found = re.search(r"librknnrt version: ([0-9][^\x00\n]*)", text)
            if found:
                return found.group(1).strip()
    return None


def driver_version():
    override = os.environ.get("RKNN_BOARD_DRIVER_VERSION_FILE")
    for path in [override] if override else DRIVER_VERSION_FILES:
        text = read_text(path)
        if text:
            found = re.search(r"v?(\d+\.\d+\.\d+)", text)
            if found:
                return found.group(1)
    return None


def soc():
    compatible = read_text(os.path.join(DEVICE_TREE, "compatible")) or ""
    model = (read_text(os.path.join(DEVICE_TREE, "model")) or "").strip("\x00").strip()
    entries = [e for e in compatible.split("\x00") if e]
    chips = [e.split(",", 1)[1] for e in entries if e.startswith("rockchip,rk") and "-" not in e.split(",", 1)[1]]
    return {"soc": chips[0] if chips else None, "compatible": entries, "model": model or None}


def preflight():
    info = {"python": sys.version.split()[0], "problems": []}
    try:
        import numpy

        info["numpy"] = numpy.__version__
    except ImportError as exc:
        info["problems"].append(f"numpy is not importable: {exc}")
    try:
        import rknnlite.api  # noqa: F401
    except Exception as exc:  # an ImportError, or the native library failing to load
        info["problems"].append(f"rknnlite is not importable: {type(exc).__name__}: {exc}")
    try:
        import importlib.metadata

        info["rknn_toolkit_lite2"] = importlib.metadata.version("rknn-toolkit-lite2")
    except Exception:
        info["rknn_toolkit_lite2"] = None
    info["librknnrt"] = librknnrt_version()
    info["driver"] = driver_version()
    info.update(soc())
    print(json.dumps(info))
    return 0


# ------------------------------------------------------------------ supervisor


def supervise(job_dir, seconds):
    """Run the job in its own process group; a hang or a crash still leaves a result."""
    result_path = os.path.join(job_dir, "result.json")
    with open(os.path.join(job_dir, "log.txt"), "ab") as log:
        child = subprocess.Popen([sys.executable, os.path.abspath(__file__), "job", job_dir], stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        # For the host's clean-up at session end: this supervisor first, then the job's group.
        supervisor_file, pgid_file = os.path.join(job_dir, "supervisor.pid"), os.path.join(job_dir, "pgid")
        with open(supervisor_file, "w") as handle:
            handle.write(str(os.getpid()))
        with open(pgid_file, "w") as handle:
            handle.write(str(child.pid))
        try:
            returncode = child.wait(timeout=seconds)
            timed_out = False
        except subprocess.TimeoutExpired:
            timed_out = True
            returncode = None
        finally:
            try:
                os.killpg(child.pid, signal.SIGKILL)  # the job and anything it started
            except (ProcessLookupError, PermissionError):
                pass
            child.wait()
            os.unlink(pgid_file)
            os.unlink(supervisor_file)
    if timed_out:
        write_json_atomic(result_path, {"status": "TIMEOUT", "seconds": seconds, "step": last_step(job_dir)})
    elif returncode < 0:
        write_json_atomic(result_path, {"status": "CRASH", "signal": -returncode, "step": last_step(job_dir)})
    elif not os.path.exists(result_path):
        write_json_atomic(result_path, {"status": "ERROR", "returncode": returncode, "step": last_step(job_dir)})
    return 0


def last_step(job_dir):
    text = read_text(os.path.join(job_dir, "log.txt")) or ""
    steps = [line.split(STEP_MARK, 1)[1].strip() for line in text.splitlines() if STEP_MARK in line]
    return steps[-1] if steps else "start"


# ------------------------------------------------------------------ job


def step(name):
    print(f"{STEP_MARK} {name}", flush=True)


def job(job_dir):
    with open(os.path.join(job_dir, "job.json")) as handle:
        spec = json.load(handle)
    result = {"status": "ok", "timings": {}}
    result_path = os.path.join(job_dir, "result.json")
    rknn_path = os.path.join(job_dir, spec["rknn_name"])

    step("sha256")
    found = sha256_of(rknn_path)
    if found != spec["rknn_sha256"]:
        write_json_atomic(result_path, {"status": "SHA256", "found": found})
        return 0

    step("import")
    import numpy as np
    from rknnlite.api import RKNNLite

    lite = RKNNLite()
    for name, call in (("load_rknn", lambda: lite.load_rknn(rknn_path)),
                       ("init_runtime", lambda: lite.init_runtime(core_mask=getattr(RKNNLite, spec["core_mask"])))):
        step(name)
        started = time.monotonic()
        ret = call()
        result["timings"][name] = time.monotonic() - started
        if ret != 0:
            write_json_atomic(result_path, {"status": "RUNTIME", "step": name, "returncode": ret})
            return 0

    step("inference")
    data = np.load(os.path.join(job_dir, "inputs.npz"))
    formats = spec["data_format"]
    outputs, failed = {}, []
    started = time.monotonic()
    for s in range(spec["samples"]):
        arrays = [data[f"s{s}_i{i}"] for i in range(len(formats))]
        print(f"[pytest-rknn] inference sample {s}", flush=True)
        outs = lite.inference(inputs=arrays, data_format=formats)
        if outs is None:
            failed.append(s)
            continue
        for k, out in enumerate(outs):
            outputs[f"s{s}_o{k}"] = np.asarray(out)
    result["timings"]["inference"] = time.monotonic() - started
    tmp = os.path.join(job_dir, "outputs.tmp.npz")
    np.savez(tmp, **outputs)
    os.replace(tmp, os.path.join(job_dir, "outputs.npz"))
    lite.release()
    result["failed_samples"] = failed
    write_json_atomic(result_path, result)
    return 0


def main(argv):
    if argv[:1] == ["preflight"]:
        return preflight()
    if argv[:1] == ["run"] and len(argv) == 3:
        return supervise(argv[1], float(argv[2]))
    if argv[:1] == ["job"] and len(argv) == 2:
        return job(argv[1])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
