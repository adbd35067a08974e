"""What a verbose build costs: the same builds with RKNN(verbose=False) and RKNN(verbose=True),
interleaved, in one toolkit environment. pytest-rknn builds verbose always, because only a verbose
build prints the layer table (where each layer runs, its estimated cycles, the memory totals).

    .venv/bin/python benchmarks/verbose_build.py [--repeat 3] [--version 2.5.0] [--layers 200]

Models: the bundled avgpool example, the fixture YOLOv5 (three heads) built int8 with its
calibration images, and a generated chain of LAYERS 3x3 convolutions (the layer table has one row
per layer, so this is where printing it would cost most). Each build runs in a fresh toolkit
process (config, load_onnx, build); the time is build() alone, the median of REPEAT.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from pytest_rknn.toolkit.envs import Provisioner, ToolkitRequest, default_cache_dir  # noqa: E402

BUILD = r"""
import json, os, sys, time
from rknn.api import RKNN
model, quantize, dataset, verbose, log = sys.argv[1], sys.argv[2] == "1", sys.argv[3] or None, sys.argv[4] == "1", sys.argv[5]
fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
saved = os.dup(1)
os.dup2(fd, 1); os.dup2(fd, 2)
rknn = RKNN(verbose=verbose)
rknn.config(target_platform="rk3588", mean_values=[[0, 0, 0]], std_values=[[255, 255, 255]])
assert rknn.load_onnx(model=model) == 0
started = time.monotonic()
assert rknn.build(do_quantization=quantize, dataset=dataset) == 0
seconds = time.monotonic() - started
os.dup2(saved, 1)
print(json.dumps({"build": seconds}))
"""


def conv_chain(path: Path, layers: int) -> None:
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, name = [], [], "x"
    for i in range(layers):
        w = numpy_helper.from_array((rng.standard_normal((16, 16 if i else 3, 3, 3)) * 0.1).astype(np.float32), f"w{i}")
        inits.append(w)
        nodes.append(helper.make_node("Conv", [name, f"w{i}"], [f"c{i}"], name=f"conv{i}", pads=[1, 1, 1, 1]))
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"], name=f"relu{i}"))
        name = f"r{i}"
    graph = helper.make_graph(nodes, "chain", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 64, 64])],
                              [helper.make_tensor_value_info(name, TensorProto.FLOAT, [1, 16, 64, 64])], inits)
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)]), str(path))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--version", default="2.5.0")
    parser.add_argument("--layers", type=int, default=200)
    args = parser.parse_args()
    python = Provisioner(default_cache_dir(), progress=lambda m: print(m, file=sys.stderr)).python_for(
        ToolkitRequest(args.version))
    work = Path(tempfile.mkdtemp(prefix="verbose-build-"))
    chain = work / "chain.onnx"
    conv_chain(chain, args.layers)
    dataset = work / "dataset.txt"
    dataset.write_text("".join(f"{p}\n" for p in sorted((ROOT / "fixtures/yolo/calib").glob("*.jpg"))))
    script = work / "build.py"
    script.write_text(BUILD)
    cases = [("avgpool (fp16)", ROOT / "fixtures/models/avgpool.onnx", False),
             ("yolov5_heads (int8)", ROOT / "fixtures/yolo/yolov5_heads.onnx", True),
             (f"conv chain, {args.layers} layers (fp16)", chain, False)]
    print(f"rknn-toolkit2 {args.version}, build() time, median of {args.repeat}, quiet vs verbose interleaved")
    print(f"{'model':34} {'quiet':>8} {'verbose':>8} {'ratio':>6} {'log quiet':>10} {'log verbose':>12}")
    for label, model, quantize in cases:
        times = {False: [], True: []}
        sizes = {}
        for _ in range(args.repeat):
            for verbose in (False, True):
                log = work / f"log-{int(verbose)}.txt"
                done = subprocess.run([python, str(script), str(model), str(int(quantize)),
                                       str(dataset) if quantize else "", str(int(verbose)), str(log)],
                                      capture_output=True, text=True, timeout=900, cwd=work)  # it writes check*.onnx
                if done.returncode != 0:
                    print(f"{label}: build failed (verbose={verbose}): {done.stderr[-500:]}", file=sys.stderr)
                    return 1
                times[verbose].append(json.loads(done.stdout.strip().splitlines()[-1])["build"])
                sizes[verbose] = log.stat().st_size
        quiet, loud = statistics.median(times[False]), statistics.median(times[True])
        print(f"{label:34} {quiet:7.2f}s {loud:7.2f}s {loud / quiet:5.2f}x {sizes[False] / 1024:8.0f}KB "
              f"{sizes[True] / 1024:10.0f}KB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
