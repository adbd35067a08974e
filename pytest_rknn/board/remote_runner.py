"""Runs on the board. Standard library, numpy and rknn-toolkit-lite2 only; uploaded once
per session and never imported by pytest_rknn itself.

  python3 remote_runner.py preflight            -> one JSON line: versions, SoC
  python3 remote_runner.py run JOB_DIR SECONDS  -> supervises one job (below), forked into its own
                                                   process group, killed as a group on timeout
  python3 remote_runner.py job JOB_DIR          -> load_rknn, init_runtime, inference for all samples
                                                   (in this process; for running one job by hand)

Latency: one warm-up inference() of sample 0, then each call of the normal pass is timed
(time.perf_counter), then more runs from the first sample until job.json's `latency_runs` timed
runs in all; result.json `latency`: median_ms, p90_ms, runs, warmup, core_mask.

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
    info: dict = {"python": sys.version.split()[0], "problems": []}
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
    result: dict = {"status": "ok", "timings": {}}
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
    samples = spec["samples"]

    def inputs_of(s):
        return [data[f"s{s}_i{i}"] for i in range(len(formats))]

    # One warm-up run, not timed, its output discarded (the first call pays for lazy set-up); a
    # None from it shows again in the normal pass below.
    print("[pytest-rknn] warm-up: inference sample 0", flush=True)
    lite.inference(inputs=inputs_of(0), data_format=formats)
    outputs, failed, times = {}, [], []
    started = time.monotonic()
    for s in range(samples):
        arrays = inputs_of(s)
        print(f"[pytest-rknn] inference sample {s}", flush=True)
        call_started = time.perf_counter()
        outs = lite.inference(inputs=arrays, data_format=formats)
        elapsed = time.perf_counter() - call_started
        if outs is None:
            failed.append(s)
            continue
        times.append(elapsed)
        for k, out in enumerate(outs):
            outputs[f"s{s}_o{k}"] = np.asarray(out)
    result["timings"]["inference"] = time.monotonic() - started
    result["latency"] = measure_latency(lite, inputs_of, formats, [s for s in range(samples) if s not in failed],
                                        times, spec.get("latency_runs") or 0, spec["core_mask"])
    tmp = os.path.join(job_dir, "outputs.tmp.npz")
    np.savez(tmp, **outputs)  # type: ignore[arg-type]  # mypy: a **dict might fill allow_pickle
    os.replace(tmp, os.path.join(job_dir, "outputs.npz"))
    lite.release()
    result["failed_samples"] = failed
    write_json_atomic(result_path, result)
    return 0


def measure_latency(lite, inputs_of, formats, good, times, wanted, core_mask):
    """More timed inference() runs after the normal pass (whose per-sample times are `times`),
    cycling through the samples that gave outputs (`good`) from the first, until `wanted` timed
    runs in all (never fewer than the normal pass made). Only calls that return outputs count;
    at most `wanted` calls in all are timed, so a runtime that starts failing cannot loop for ever.
    None when no call succeeded."""
    extra = max(wanted - len(times), 0) if good else 0
    if extra:
        step("latency")
        for n in range(extra):
            arrays = inputs_of(good[n % len(good)])
            call_started = time.perf_counter()
            outs = lite.inference(inputs=arrays, data_format=formats)
            elapsed = time.perf_counter() - call_started
            if outs is not None:
                times.append(elapsed)
    if not times:
        return None
    ms = sorted(t * 1000.0 for t in times)
    return {"median_ms": percentile(ms, 50), "p90_ms": percentile(ms, 90), "runs": len(ms), "warmup": 1,
            "core_mask": core_mask}


def percentile(ordered, p):
    """Linear interpolation between the closest ranks (numpy's default, `linear`): rank
    (n - 1) * p / 100 of the ascending values; the median of an even count is the mean of the two
    middle ones."""
    rank = (len(ordered) - 1) * p / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


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
