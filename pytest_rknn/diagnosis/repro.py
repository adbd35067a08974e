"""A repro bundle per failed item: what a user attaches to a toolkit bug report.

`write_bundle` writes `JOB_DIR/repro/` (the item's own job folder: `VERSION/` for the simulator,
`VERSION-board/` for the board), a folder that needs nothing of pytest-rknn:

  repro.py               a copy of repro_template.py: numpy and rknn-toolkit2 (sim) or rknn-toolkit-lite2 (board)
  repro.json             what it runs (target, rknn.config, int8 or not, data_format per input, samples)
                         and what it checks (the thresholds per output), the plugin's failure lines
  inputs.npz             the failing samples' input arrays as the job has them (keys s{sample}_i{input})
  reference.npz          onnxruntime's outputs for those samples (keys s{sample}_o{output})
  outputs.npz            what the backend returned for them, when it returned anything
  simulator_outputs.npz  board bundles: the simulator's outputs for them
  SPEC.rknn              the simulator's .rknn (none when the build failed before the export)
  model/                 sim bundles: the ONNX model and its external data files (or their absolute paths in
                         repro.json when they exceed COPY_LIMIT)
  dataset.txt, calibration/   int8 sim bundles: the calibration list and its files (the same limit)
  spec.yaml              the version's merged spec, paths absolute
  fingerprint.json       the result's fingerprint (toolkit, host, board, hashes)
  log.txt, job_result.json    the job's log and result.json (board bundles also build_log.txt: the simulator's)
  README.txt             the failure and the command that runs repro.py

Only the failing samples go in (per output, the sample its failing check names; for another failure the
worst sample per output and a detector's image with the largest count difference; for a BUILD/CRASH/TIMEOUT
in inference(), the sample being inferred; before inference(), sample 0 up to EARLY_INPUT_LIMIT), so the size
does not grow with the input set. SPEC, ENV and INTERNAL failures get no bundle: the spec, the environment or pytest-rknn itself is what is
wrong, and there is no toolkit call to reproduce.

It only adds evidence: it never changes an outcome (the runner turns an exception here into a warning).
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Iterable, List, Optional, Sequence

import numpy as np

from ..errors import ENV, INTERNAL, SPEC
from ..inputs import InputSet
from ..onnx_model import ModelInfo
from ..result import RunResult, json_safe
from ..spec import Spec

FOLDER = "repro"
TEMPLATE = Path(__file__).resolve().parent / "repro_template.py"
NOTHING_TO_REPRODUCE = (SPEC, ENV, INTERNAL)
COPY_LIMIT = 200 * 1024 * 1024  # bytes: a model or calibration set bigger than this is named by its path, not copied
EARLY_INPUT_LIMIT = 16 * 1024 * 1024  # bytes: a failure before inference() keeps its sample's inputs up to this size
_INFERRED = re.compile(r"inference sample (\d+)")
_STEP = re.compile(r"\[pytest-rknn\] step: (\w+)")


def wanted(result: RunResult) -> bool:
    """A failed item whose failure a toolkit call can reproduce."""
    return not result.passed and result.failure_class not in NOTHING_TO_REPRODUCE


def write_bundle(result: RunResult, spec: Spec, model: ModelInfo, inputs: InputSet, job_dir: Path,
                 sim_job_dir: Path, reference: Optional[Sequence[Optional[List[np.ndarray]]]] = None,
                 toolkit_python: Optional[str] = None) -> Path:
    """The bundle of a failed item in `job_dir/repro/` (replaced if there is one); its folder.

    `job_dir` is the item's job folder, `sim_job_dir` the simulator job's (the same for a sim item: its
    job.json says how the model was built), `reference` onnxruntime's outputs [sample][output] if known,
    `toolkit_python` the toolkit environment's Python (for the command in README.txt)."""
    board = job_dir != sim_job_dir
    job = json.loads((sim_job_dir / "job.json").read_text())
    folder = job_dir / FOLDER
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    samples = failing_samples(result, job_dir, len(inputs))
    if not result.outputs and not _reached_inference(job_dir) and \
            sum(a.nbytes for s in samples for a in inputs.samples[s]) > EARLY_INPUT_LIMIT:
        samples = []  # failed before inference(): big arrays that the failing call never reads stay out

    if samples:
        # the ignores: mypy takes the **dict for a possible allow_pickle= (see jobdir.write_job)
        np.savez(folder / "inputs.npz", **{f"s{s}_i{i}": inputs.samples[s][i]  # type: ignore[arg-type]
                                           for s in samples for i in range(len(inputs.names))})
    if reference is not None:
        np.savez(folder / "reference.npz", **{f"s{s}_o{k}": array  # type: ignore[arg-type]
                                              for s in samples for k, array in enumerate(reference[s] or [])})
    _copy_outputs(job_dir / "outputs.npz", folder / "outputs.npz", samples)
    if board:
        _copy_outputs(sim_job_dir / "outputs.npz", folder / "simulator_outputs.npz", samples)

    rknn = sim_job_dir / job["rknn_name"]
    if rknn.is_file():
        shutil.copy2(rknn, folder / rknn.name)
    config = {
        "item": f"{result.spec}[{result.version}-{result.backend}]",
        "backend": "board" if board else "sim",
        "toolkit_version": result.toolkit_version or result.version,
        "failure_class": result.failure_class,
        "message": result.message,
        "failures": list(result.failures) or [result.message],
        "target": job["target"],
        "config": job["config"],
        "quantize": job["quantize"],
        "verbose": True,  # as the worker builds
        "model": str(spec.model_path),
        "dataset": None,
        "rknn": rknn.name if rknn.is_file() else None,
        "core_mask": (result.latency or {}).get("core_mask") or "NPU_CORE_AUTO",
        "input_names": list(inputs.names),
        "data_format": job["data_format"],  # per input, as the worker passes it to inference()
        "samples": [{"index": s, "label": inputs.labels[s]} for s in samples],
        "outputs": [_thresholds(spec, name, board) for name in (t.name for t in model.outputs)],
    }
    if not board:
        config["model"] = _copy_model(model, spec.model_path, folder)
        if job.get("dataset"):
            config["dataset"] = _copy_dataset(Path(job["dataset"]), folder)
    (folder / "repro.json").write_text(json.dumps(json_safe(config), indent=1) + "\n")
    shutil.copy2(TEMPLATE, folder / "repro.py")

    for source, name in ((job_dir / "log.txt", "log.txt"), (job_dir / "result.json", "job_result.json")):
        if source.is_file():
            shutil.copy2(source, folder / name)
    if board and (sim_job_dir / "log.txt").is_file():
        shutil.copy2(sim_job_dir / "log.txt", folder / "build_log.txt")
    (folder / "spec.yaml").write_text(resolved_spec_text(spec))
    (folder / "fingerprint.json").write_text(json.dumps(json_safe(result.fingerprint), indent=1, default=str) + "\n")
    (folder / "README.txt").write_text(_readme(config, toolkit_python, board, folder))
    return folder


def failing_samples(result: RunResult, job_dir: Path, count: int) -> List[int]:
    """The samples the bundle keeps: those the failure is about, in order."""
    if not result.outputs:  # BUILD, CRASH, TIMEOUT: the sample inference() failed on, if it got that far
        found = []
        try:
            found = json.loads((job_dir / "result.json").read_text()).get("failed_samples", [])[:1]
        except (OSError, ValueError, AttributeError):
            pass
        if not found and _reached_inference(job_dir):
            inferred = _INFERRED.findall(_read(job_dir / "log.txt"))
            found = [int(inferred[-1])] if inferred else []
        return [s for s in found if 0 <= s < count] or [0]
    samples = []
    for m in result.outputs:
        minimum = result.thresholds.get(f"cosine.{m.name}")
        if m.nonfinite and m.nonfinite_sample is not None:
            samples.append(m.nonfinite_sample)
        elif minimum is not None and not (m.worst_cosine >= minimum):
            samples.append(m.worst_sample)
    if not samples:  # another check failed (max_abs, detection, placement, latency...): the worst sample per output
        samples = [m.worst_sample for m in result.outputs]
        counts = getattr(result.detection, "counts", None) or []
        if len(counts) == count:  # a detector: also the image whose detection count differs most
            differs = [abs(int(c[1]) - int(c[2])) for c in counts]
            if max(differs) > 0:
                samples.append(differs.index(max(differs)))
    return sorted({s for s in samples if 0 <= s < count}) or [0]


def resolved_spec(spec: Spec) -> dict:
    """The version's merged spec (as Spec.for_version merges it), every path absolute."""
    raw = json.loads(json.dumps({k: v for k, v in spec.raw.items() if k != "versions"}, default=str))
    raw["model"] = str(spec.model_path)
    for source in (raw.get("inputs") or {}).values():
        if isinstance(source, dict):
            for key in ("file", "images"):
                if key in source:
                    source[key] = _absolute(spec, source[key])
    quantize = (raw.get("convert") or {}).get("quantize")
    if isinstance(quantize, dict) and "dataset" in quantize:
        dataset = quantize["dataset"]
        quantize["dataset"] = ({k: _absolute(spec, v) for k, v in dataset.items()} if isinstance(dataset, dict)
                               else _absolute(spec, dataset))
    yolov5 = (raw.get("checks") or {}).get("yolov5")
    if isinstance(yolov5, dict) and yolov5.get("labels"):
        yolov5["labels"] = _absolute(spec, yolov5["labels"])
    return raw


def resolved_spec_text(spec: Spec) -> str:
    import yaml

    header = (f"# {spec.name} for rknn-toolkit2 {spec.version}: the spec file"
              f"{' ' + str(spec.path) if spec.path.suffix else ''} with its `versions` override merged, paths absolute\n")
    return header + yaml.safe_dump(resolved_spec(spec), sort_keys=False)


def bundle_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


# ------------------------------------------------------------------ helpers


def _absolute(spec: Spec, value):
    if isinstance(value, str):
        return str(spec.resolve(value))
    if isinstance(value, list):
        return [_absolute(spec, v) for v in value]
    return value


def _thresholds(spec: Spec, name: str, board: bool) -> dict:
    max_abs = spec.checks.max_abs
    vs_sim = spec.checks.vs_sim_cosine
    return {
        "name": name,
        "cosine_min": spec.checks.cosine.outputs.get(name, spec.checks.cosine.min),
        "max_abs_max": max_abs.outputs.get(name, max_abs.max) if max_abs is not None else None,
        "vs_sim_cosine_min": vs_sim.outputs.get(name, vs_sim.min) if board and vs_sim is not None else None,
    }


def _copy_outputs(source: Path, target: Path, samples: Iterable[int]) -> None:
    if not source.is_file():
        return
    wanted_prefixes = tuple(f"s{s}_o" for s in samples)
    with np.load(source) as data:
        kept = {key: data[key] for key in data.files if key.startswith(wanted_prefixes)}
    if kept:
        np.savez(target, **kept)


def _copy_model(model: ModelInfo, model_path: Path, folder: Path) -> str:
    """The ONNX model (and the external data files it names, beside it) in model/; its absolute path when too big."""
    files = [model_path] + [model_path.parent / name for name in model.external_data]
    if sum(p.stat().st_size for p in files if p.is_file()) > COPY_LIMIT:
        return str(model_path)
    target = folder / "model"
    for path, name in zip(files, [model_path.name] + list(model.external_data)):
        if path.is_file():
            (target / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target / name)
    return f"model/{model_path.name}"


def _copy_dataset(dataset: Path, folder: Path) -> str:
    """The calibration list with its files copied into calibration/ (paths relative to the bundle); the
    toolkit's own list, absolute paths, when the files exceed COPY_LIMIT."""
    rows = [line.split() for line in dataset.read_text().splitlines() if line.strip()]
    files = [Path(p) for row in rows for p in row]
    if sum(p.stat().st_size for p in files if p.is_file()) > COPY_LIMIT:
        shutil.copy2(dataset, folder / "dataset.txt")
        return "dataset.txt"
    (folder / "calibration").mkdir()
    lines = []
    for r, row in enumerate(rows):
        names = []
        for c, path in enumerate(row):
            name = f"calibration/{r:04d}_{c}_{Path(path).name}"
            if Path(path).is_file():
                shutil.copy2(path, folder / name)
                names.append(name)
            else:
                names.append(path)  # not there (any more): named as the toolkit got it
        lines.append(" ".join(names) + "\n")
    (folder / "dataset.txt").write_text("".join(lines))
    return "dataset.txt"


def _reached_inference(job_dir: Path) -> bool:
    """The job's last step mark (the worker's and the board runner's) is inference()."""
    steps = _STEP.findall(_read(job_dir / "log.txt"))
    return bool(steps) and steps[-1] == "inference"


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _readme(config: dict, toolkit_python: Optional[str], board: bool, folder: Path) -> str:
    if board:
        needs = "the board's Python 3 with numpy and rknn-toolkit-lite2 (copy this folder to the board)"
        command = "python3 repro.py"
    else:
        needs = f"a Python with numpy and rknn-toolkit2 {config['toolkit_version']}"
        command = f"{toolkit_python or 'python'} {folder / 'repro.py'}"
    failures = "\n".join(f"  {line}" for line in config["failures"])
    return (f"{config['item']} failed ({config['failure_class']}):\n{failures}\n\n"
            f"To reproduce it without pytest-rknn, with {needs}:\n\n"
            f"    {command}\n\n"
            f"repro.py prints each check of the saved samples as pytest-rknn words it and exits 1 when one fails, "
            f"0 when all pass, 2 when a toolkit call fails; see its docstring and repro.json.\n")
