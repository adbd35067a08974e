"""Time of the YOLOv5 detection check on 50 images next to the simulator's own time, in one run.

    .venv/bin/python benchmarks/detection_overhead.py [SPEC ...]

For each spec (default: the two fixture detectors, 50 validation images each) it builds
and simulates once with rknn-toolkit2 2.5.0 and prints the check's time (decode, NMS,
letterbox mapping, pycocotools mAP against labels and against onnxruntime, per-slice
cosines, overlays) beside the simulator's: the whole worker job (toolkit import, build,
export, init, inference) and its inference alone. The fixture detector is tiny (160x160,
about 8 ms per image in the simulator); a 640x640 yolov5n takes 300-400 ms per image there.
"""

from __future__ import annotations

import sys
import tempfile
import time
from pathlib import Path

from pytest_rknn.runner import RknnRunner
from pytest_rknn.spec import load_spec
from pytest_rknn.toolkit.envs import Provisioner, ToolkitRequest, default_cache_dir

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SPECS = [ROOT / "fixtures/examples/yolov5_heads_int8.rknn.yaml", ROOT / "fixtures/examples/yolov5_single.rknn.yaml"]
VERSION = "2.5.0"


def main(argv) -> int:
    specs = [Path(a) for a in argv] or DEFAULT_SPECS
    with tempfile.TemporaryDirectory() as work:
        runner = RknnRunner(Provisioner(default_cache_dir()), [ToolkitRequest(VERSION)], Path(work))
        print(f"{'spec':<22} {'images':>6} {'worker s':>8} {'build s':>8} {'simulate s':>10} "
              f"{'detection check s':>17} {'check/simulate':>14} {'check/worker':>12}")
        for path in specs:
            spec = load_spec(path)
            started = time.perf_counter()
            result = runner.run(spec, VERSION)
            total = time.perf_counter() - started
            if result.detection is None:
                print(f"{spec.name}: no detection result ({result.failure_class}: {result.message})")
                continue
            worker = sum(v for k, v in result.timings.items() if k != "reference")  # import, build, ..., inference
            build = result.timings.get("build", float("nan"))
            simulate = result.timings.get("inference", float("nan"))
            check = result.detection.seconds
            print(f"{spec.name:<22} {len(result.detection.counts):>6} {worker:>8.2f} {build:>8.2f} {simulate:>10.2f} "
                  f"{check:>17.3f} {check / simulate:>14.3f} {check / worker:>12.3f}")
        print(f"(whole run of the last spec, reference and worker start-up included: {total:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
