"""pytest-rknn against the hand-written script it replaces, on the example suite (fixtures/examples).

    .venv/bin/python benchmarks/vs_script.py [--repeat 3] [--versions 2.3.2,2.5.0] [--copies 3]

(a) pytest-rknn: `.venv/bin/pytest fixtures/examples -p no:cacheprovider -q --rknn-toolkit=...` in a
    subprocess; cold (with --rknn-no-cache, when pytest-rknn has that option) and, when it has
    --rknn-cache, warm (a private cache folder, filled by one untimed run first).
(b) the script: one Python process per toolkit version, started with that version's provisioned
    Python (found as pytest-rknn finds it), looping over the same specs: onnxruntime on the same
    arrays, rknn config/load_onnx/build/export/init_runtime with the same config and calibration
    list, inference on the same arrays, worst cosine per output. Several versions: the scripts run
    one after the other. The arrays and job files are written beforehand by this process with
    pytest-rknn's own spec loading and input preparation; that step is not in the script's time
    (it is printed on its own).

The runs are interleaved (A B A B ...) and every number is the median of --repeat runs. A run's
time is the command's own wall time, measured around it by a small wrapper process. Peak RSS:
the largest single process (getrusage of a wrapper's children) and, in brackets, the largest sum
over the whole process tree (sampled every 0.25 s), which is what parallel workers add up to.
A benchmark, not a test: it asserts nothing, it measures.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Dict, List

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_rknn.inputs import prepare_inputs  # noqa: E402
from pytest_rknn.jobdir import write_job  # noqa: E402
from pytest_rknn.onnx_model import read_model_info  # noqa: E402
from pytest_rknn.reference import to_model_feed  # noqa: E402
from pytest_rknn.spec import SPEC_SUFFIX, QuantizeSpec, load_spec  # noqa: E402
from pytest_rknn.toolkit.calibration import write_dataset  # noqa: E402
from pytest_rknn.toolkit.envs import Provisioner, ToolkitRequest, default_cache_dir  # noqa: E402

EXAMPLES = ROOT / "fixtures" / "examples"
PYTEST = Path(sys.executable).with_name("pytest")  # beside .venv/bin/python
PAGE = os.sysconf("SC_PAGE_SIZE")

# The script a user would write, run once per toolkit version: `python script.py jobs.json`.
SCRIPT = r'''
import json, sys
import numpy as np
import onnxruntime as ort
from rknn.api import RKNN


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


for item in json.load(open(sys.argv[1])):
    folder = item["dir"]
    job = json.load(open(f"{folder}/job.json"))
    feeds, inputs = np.load(f"{folder}/feeds.npz"), np.load(f"{folder}/inputs.npz")
    n_inputs = len(job["data_format"])
    session = ort.InferenceSession(job["model"], providers=["CPUExecutionProvider"])
    reference = [session.run(item["outputs"], {name: feeds[f"s{s}_i{i}"] for i, name in enumerate(item["inputs"])})
                 for s in range(job["samples"])]
    rknn = RKNN(verbose=False)
    rknn.config(target_platform=job["target"], **job["config"])
    rknn.load_onnx(model=job["model"])
    rknn.build(do_quantization=job["quantize"], dataset=job["dataset"])
    rknn.export_rknn(f"{folder}/{job['rknn_name']}")
    rknn.init_runtime()
    worst = [1.0] * len(item["outputs"])
    for s in range(job["samples"]):
        outs = rknn.inference(inputs=[inputs[f"s{s}_i{i}"] for i in range(n_inputs)], data_format=job["data_format"])
        worst = [min(w, cosine(r, o)) for w, r, o in zip(worst, reference[s], outs)]
    rknn.release()
    print("COSINE", item["name"], json.dumps(dict(zip(item["outputs"], worst))), flush=True)
'''

# Runs a command with its output in a log; prints its wall time (the wrapper's own start-up is not in
# it), the peak RSS (KiB on Linux) of its largest process and its exit status.
WRAPPER = """import resource, subprocess, sys, time
with open(sys.argv[1], "ab") as log:
    started = time.monotonic()
    code = subprocess.call(sys.argv[2:], stdout=log, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
print(seconds, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss, code)
"""


@dataclass
class Run:
    seconds: float
    max_process: int  # bytes
    max_tree: int  # bytes
    ok: bool


def tree_rss(root: int) -> int:
    """The summed RSS of root's descendants (not root itself, the wrapper), from /proc."""
    parent, rss = {}, {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        pid = int(stat.parent.name)
        parent[pid], rss[pid] = int(fields[1]), int(fields[21]) * PAGE
    total, todo = 0, [p for p, pp in parent.items() if pp == root]
    while todo:
        pid = todo.pop()
        total += rss.get(pid, 0)
        todo += [p for p, pp in parent.items() if pp == pid]
    return total


def measure(command: List[str], log: Path) -> Run:
    """Wall time and peak RSS of one command, its output appended to `log`."""
    process = subprocess.Popen([sys.executable, "-c", WRAPPER, str(log), *map(str, command)],
                               stdout=subprocess.PIPE, text=True, cwd=ROOT)
    peak_tree = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.wait(0.25):
            peak_tree[0] = max(peak_tree[0], tree_rss(process.pid))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    seconds, max_rss, code = process.communicate()[0].split()
    seconds = float(seconds)
    done.set()
    sampler.join()
    return Run(seconds, int(max_rss) * 1024, max(peak_tree[0], int(max_rss) * 1024), code == "0")


def serial(runs: List[Run]) -> Run:
    """Runs one after the other: their times add up, their memory does not."""
    return Run(sum(r.seconds for r in runs), max(r.max_process for r in runs), max(r.max_tree for r in runs),
               all(r.ok for r in runs))


# ------------------------------------------------------------------ the two sides


def copy_specs(folder: Path, copies: int) -> Path:
    """The example specs `copies` times over, beside links to the fixture data they name (../models...)."""
    for data in ("models", "data", "yolo"):
        (folder / data).symlink_to(ROOT / "fixtures" / data)
    specs = folder / "examples"
    specs.mkdir()
    for spec in sorted(EXAMPLES.glob(f"*{SPEC_SUFFIX}")):
        for k in range(copies):
            shutil.copy(spec, specs / f"{spec.name[:-len(SPEC_SUFFIX)]}_{k}{SPEC_SUFFIX}")
    return specs


def prepare_script_jobs(specs: Path, version: str, folder: Path) -> Path:
    """One job folder per spec with the arrays pytest-rknn would make (inputs.npz for the NPU,
    feeds.npz for onnxruntime) and its job.json; returns the list the script loops over."""
    items = []
    for path in sorted(specs.glob(f"*{SPEC_SUFFIX}")):
        spec = load_spec(path).for_version(version)
        model = read_model_info(spec.model_path)
        inputs = prepare_inputs(spec, model)
        job_dir = folder / spec.name
        job_dir.mkdir(parents=True)
        job = {"model": str(spec.model_path), "target": spec.target, "config": spec.convert.config_kwargs(),
               "quantize": isinstance(spec.convert.quantize, QuantizeSpec),
               "dataset": write_dataset(spec, model, job_dir), "rknn_name": f"{spec.name}.rknn"}
        write_job(job_dir, job, inputs)
        feeds = [list(to_model_feed(spec, model, inputs, sample).values()) for sample in inputs.samples]
        np.savez(job_dir / "feeds.npz",
                 **{f"s{s}_i{i}": a for s, arrays in enumerate(feeds) for i, a in enumerate(arrays)})
        items.append({"name": spec.name, "dir": str(job_dir), "inputs": [t.name for t in model.inputs],
                      "outputs": [t.name for t in model.outputs]})
    jobs = folder / "jobs.json"
    jobs.write_text(json.dumps(items, indent=1))
    return jobs


def pytest_options() -> set:
    help_text = subprocess.run([str(PYTEST), "--help", "-p", "no:cacheprovider"], capture_output=True, text=True,
                               cwd=ROOT).stdout
    return {flag for flag in ("--rknn-no-cache", "--rknn-cache") if f"{flag}=" in help_text or f"{flag} " in help_text}


def pytest_command(specs: Path, versions: List[str], basetemp: Path, extra: List[str]) -> List[str]:
    return [PYTEST, specs, "-p", "no:cacheprovider", "-q", f"--rknn-toolkit={','.join(versions)}",
            f"--basetemp={basetemp}", *extra]


def script_cosines(log: Path) -> Dict[str, Dict[str, float]]:
    found = {}
    for line in log.read_text(errors="replace").splitlines():
        if line.startswith("COSINE "):
            _, name, values = line.split(" ", 2)
            found[name] = json.loads(values)
    return found


def report_cosines(path: Path, version: str) -> Dict[str, Dict[str, float]]:
    items = json.loads(path.read_text())["items"]
    return {r["spec"]: {k.split(".", 1)[1]: v for k, v in r["metrics"].items() if k.startswith("cosine.")}
            for r in items if r["version"] == version and r["backend"] == "sim"}


# ------------------------------------------------------------------ output


def gb(value: float) -> str:
    return f"{value / 1e9:.2f} GB"


def median_run(runs: List[Run]) -> Run:
    return Run(statistics.median(r.seconds for r in runs), max(r.max_process for r in runs),
               max(r.max_tree for r in runs), all(r.ok for r in runs))


def print_table(cases: List[dict], warm: bool, repeat: int) -> None:
    print(f"\nmedian of {repeat}, seconds. cold: pytest-rknn (--rknn-no-cache when it has it); script: the "
          f"hand-written script(s)" + ("; warm: pytest-rknn with a filled --rknn-cache" if warm else "")
          + ".\nPeak RSS: the largest process (the whole process tree).")
    head = f"{'case':<24} {'cold':>7} {'script':>7} {'cold/script':>11}"
    if warm:
        head += f" {'warm':>7} {'warm/cold':>9}"
    print(head + f"   {'peak RSS pytest-rknn':<22} {'peak RSS script'}")
    for case in cases:
        a, b = median_run(case["pytest"]), median_run(case["script"])
        line = f"{case['label']:<24} {a.seconds:>7.1f} {b.seconds:>7.1f} {a.seconds / b.seconds:>10.2f}x"
        runs = [a, b]
        if warm:
            w = median_run(case["warm"])
            line += f" {w.seconds:>7.2f} {w.seconds / a.seconds:>8.3f}x"
            runs.append(w)
        memory = f"   {gb(a.max_process) + ' (' + gb(a.max_tree) + ')':<22} {gb(b.max_process)} ({gb(b.max_tree)})"
        print(line + memory + ("" if all(r.ok for r in runs) else "   a run FAILED: see its log (--keep)"))
    base, scaled = cases[0], cases[1:]
    if scaled:
        print(f"\nscaling against '{base['label']}'   {'work':>5} {'pytest-rknn':>11} {'script':>8}")
        for case in scaled:
            work = case["work"] / base["work"]
            a = median_run(case["pytest"]).seconds / median_run(base["pytest"]).seconds
            b = median_run(case["script"]).seconds / median_run(base["script"]).seconds
            print(f"{case['label']:<33} {work:>4.0f}x {a:>10.2f}x {b:>7.2f}x")


# ------------------------------------------------------------------ main


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs of each side; the median is shown (default 3)")
    parser.add_argument("--versions", default="2.3.2,2.5.0",
                        help="toolkit versions; the last alone is the one-version case (default 2.3.2,2.5.0)")
    parser.add_argument("--copies", type=int, default=1,
                        help="also run the example specs N times over (7N specs, last version): the scaling row")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs, job folders)")
    args = parser.parse_args()
    versions = [v.strip() for v in args.versions.split(",") if v.strip()]
    work = Path(tempfile.mkdtemp(prefix="rknn-vs-script-"))
    (work / "script.py").write_text(SCRIPT)
    provisioner = Provisioner(default_cache_dir(), progress=print)
    pythons = {v: provisioner.python_for(ToolkitRequest(v)) for v in versions}
    options = pytest_options()
    warm = "--rknn-cache" in options
    cold_flags = ["--rknn-no-cache"] if "--rknn-no-cache" in options else []
    n_specs = len(list(EXAMPLES.glob(f"*{SPEC_SUFFIX}")))

    cases = [{"label": f"{n_specs} specs x {versions[-1]}", "specs": EXAMPLES, "versions": versions[-1:],
              "work": n_specs}]
    if len(versions) > 1:
        cases.append({"label": f"{n_specs} specs x {len(versions)} versions", "specs": EXAMPLES,
                      "versions": versions, "work": n_specs * len(versions)})
    if args.copies > 1:
        (work / "copies").mkdir()
        cases.append({"label": f"{n_specs * args.copies} specs x {versions[-1]}", "versions": versions[-1:],
                      "specs": copy_specs(work / "copies", args.copies), "work": n_specs * args.copies})

    print(f"work folder: {work}\npytest-rknn options found: {', '.join(sorted(options)) or 'neither cache option'}")
    for index, case in enumerate(cases):
        case.update(pytest=[], script=[], warm=[], jobs={})
        for version in case["versions"]:
            started = time.monotonic()
            case["jobs"][version] = prepare_script_jobs(case["specs"], version, work / f"prep{index}" / version)
            print(f"{case['label']}: script arrays for {version} prepared in {time.monotonic() - started:.1f} s "
                  f"(not in the script's time)")
        if warm:  # fill this case's private cache once, untimed
            case["cache"] = work / f"cache{index}"
            fill = pytest_command(case["specs"], case["versions"], work / "bt-fill", [f"--rknn-cache={case['cache']}"])
            measure(fill, work / f"fill{index}.log")

    for r in range(args.repeat):
        for index, case in enumerate(cases):
            n = f"{index}-{r}"
            report = work / f"report{n}.json"
            case["pytest"].append(measure(pytest_command(case["specs"], case["versions"], work / f"bt{n}",
                                                         [*cold_flags, f"--rknn-json={report}"]),
                                          work / f"pytest{n}.log"))
            scripts = [measure([pythons[v], work / "script.py", case["jobs"][v]], work / f"script{n}-{v}.log")
                       for v in case["versions"]]
            case["script"].append(serial(scripts))
            if warm:
                case["warm"].append(measure(pytest_command(case["specs"], case["versions"], work / f"bt{n}w",
                                                           [f"--rknn-cache={case['cache']}"]),
                                            work / f"warm{n}.log"))
            line = f"run {r + 1}/{args.repeat} {case['label']}: pytest-rknn {case['pytest'][-1].seconds:.1f} s, " \
                   f"script {case['script'][-1].seconds:.1f} s"
            if warm:
                line += f", warm {case['warm'][-1].seconds:.1f} s"
            print(line, flush=True)
            if r == 0:
                check_same_cosines(report, work, n, case["versions"])

    print_table(cases, warm, args.repeat)
    if args.keep:
        print(f"\nlogs and job folders: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
    return 0


def check_same_cosines(report: Path, work: Path, n: str, versions: List[str]) -> None:
    """Both sides did the same work: the same worst cosine per output (onnxruntime's version may differ)."""
    for version in versions:
        ours = report_cosines(report, version) if report.is_file() else {}
        theirs = script_cosines(work / f"script{n}-{version}.log")
        diffs = [abs(ours[s][o] - theirs[s][o]) for s in theirs if s in ours for o in theirs[s] if o in ours[s]]
        missing = sorted(set(ours) ^ set(theirs))
        worst = f"{max(diffs):.1e}" if diffs else "-"
        print(f"  {version}: cosines of {len(diffs)} outputs compared, largest difference {worst}"
              + (f"; only on one side: {', '.join(missing)}" if missing else ""))


if __name__ == "__main__":
    sys.exit(main())
