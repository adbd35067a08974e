"""Runs on the board. Standard library, numpy and rknn-toolkit-lite2 only; uploaded once
per session and never imported by pytest_rknn itself.

  python3 remote_runner.py preflight            -> one JSON line: versions, SoC
  python3 remote_runner.py run JOB_DIR SECONDS  -> supervises one job (below), forked into its own
                                                   process group, killed as a group on timeout
  python3 remote_runner.py job JOB_DIR          -> load_rknn, init_runtime, inference for all samples
                                                   (in this process; for running one job by hand)

In JOB_DIR: job.json, inputs.npz (s{sample}_i{input}), the .rknn file.
Out: result.json, outputs.npz (s{sample}_o{output}), log.txt.
"""

import hashlib
import json
import os
import re
import signal
import sys
import time
import traceback

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
    child = start_job(job_dir)
    # For the host's clean-up at session end: this supervisor first, then the job's group.
    supervisor_file, pgid_file = os.path.join(job_dir, "supervisor.pid"), os.path.join(job_dir, "pgid")
    with open(supervisor_file, "w") as handle:
        handle.write(str(os.getpid()))
    with open(pgid_file, "w") as handle:
        handle.write(str(child))
    status = None
    try:
        status = wait_for(child, seconds)
    finally:
        try:
            os.killpg(child, signal.SIGKILL)  # the job and anything it started
        except (ProcessLookupError, PermissionError):
            pass
        if status is None:
            os.waitpid(child, 0)
        os.unlink(pgid_file)
        os.unlink(supervisor_file)
    if status is None:
        write_json_atomic(result_path, {"status": "TIMEOUT", "seconds": seconds, "step": last_step(job_dir)})
        return 0
    if os.WIFSIGNALED(status):
        write_json_atomic(result_path, {"status": "CRASH", "signal": os.WTERMSIG(status), "step": last_step(job_dir)})
    elif not os.path.exists(result_path):
        write_json_atomic(result_path, {"status": "ERROR", "returncode": os.WEXITSTATUS(status),
                                        "step": last_step(job_dir)})
    return 0


def start_job(job_dir):
    """Fork the job into a new session, its output going to log.txt; returns its pid once it leads
    its own process group. A fork, not a new Python: under qemu-user without binfmt_misc a
    process cannot exec an aarch64 binary (sys.executable), and the fork skips a second start."""
    sys.stdout.flush()
    sys.stderr.flush()
    ready, done = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:  # the child never returns into the supervisor's code
            os.close(ready)
            os.setsid()
            os.close(done)  # tells the supervisor that the job now has a process group of its own
            code = run_job_here(job_dir)
        finally:
            os._exit(code)
    os.close(done)
    os.read(ready, 1)  # b"" once the child has called setsid (or died)
    os.close(ready)
    return pid


def run_job_here(job_dir):
    """In the forked child: stdin from /dev/null, stdout and stderr to log.txt, then the job."""
    null = os.open(os.devnull, os.O_RDONLY)
    log = os.open(os.path.join(job_dir, "log.txt"), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.dup2(null, 0)
    os.dup2(log, 1)
    os.dup2(log, 2)
    os.close(null)
    os.close(log)
    try:
        code = job(job_dir)
    except BaseException:  # as an uncaught exception in a Python of its own would: traceback, exit 1
        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return code


def wait_for(pid, seconds):
    """The child's wait status, or None if it is still running after `seconds`."""
    deadline = time.monotonic() + seconds
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return status
        left = deadline - time.monotonic()
        if left <= 0:
            return None
        time.sleep(min(0.05, left))


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
