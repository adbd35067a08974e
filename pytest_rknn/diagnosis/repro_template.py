"""Reproduce one failed pytest-rknn item, without pytest-rknn.

pytest-rknn copied this file into a repro bundle, next to repro.json (what to run and what was measured),
inputs.npz (the failing samples' input arrays, keys s{sample}_i{input}), reference.npz (onnxruntime's
outputs for them, keys s{sample}_o{output}) and the model. It needs only numpy and:

  simulator bundles ("backend": "sim"): rknn-toolkit2 (the version in repro.json). It builds the ONNX model
      with the same rknn.config and calibration list (in build/, where it also exports rebuilt.rknn), then
      init_runtime(target=None) and inference() on the saved arrays (the simulator cannot run a loaded
      .rknn, so the build is repeated);
  board bundles ("backend": "board"): rknn-toolkit-lite2 on the board. It loads the saved .rknn,
      init_runtime(core_mask=...) and inference() on the saved arrays.

It prints the failing metric the way pytest-rknn does, for example
  output 'logits' sample 0 (random #0): cosine 0.703787 < min 0.99
A toolkit call that fails prints the toolkit's error and exits 2; a native crash kills this process as it
killed pytest-rknn's worker. Exit status: 1 when a check fails (the failure reproduced), 0 when every check
passes, 2 when a toolkit call failed.

    python repro.py            # in the bundle folder or from anywhere
"""

import decimal
import json
import math
import os
import re
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def path_in_bundle(path):
    """A path of repro.json: relative ones are inside the bundle."""
    return path if os.path.isabs(path) else os.path.join(HERE, path)


def format_cosine(value, threshold=None):
    """As pytest-rknn prints a cosine: floored, six decimals or one more than the threshold has."""
    if value is None or math.isnan(value):
        return "nan"
    decimals = 6
    if threshold is not None:
        exponent = decimal.Decimal(repr(float(threshold))).as_tuple().exponent
        if isinstance(exponent, int):  # not for an infinite or NaN threshold
            decimals = max(decimals, -exponent + 1)
    scale = 10 ** decimals
    return f"{math.floor(value * scale) / scale:.{decimals}f}"


def cosine(a, b):
    """Cosine similarity in float64; NaN when either side is all zeros."""
    a = np.asarray(a).ravel().astype(np.float64)
    b = np.asarray(b).ravel().astype(np.float64)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    if na == 0.0 or nb == 0.0 or not (math.isfinite(na) and math.isfinite(nb)):
        return float("nan")
    return float(np.dot(a, b) / (na * nb))


def same_shape(ref, got):
    # The toolkit sometimes drops or adds size-1 axes; the values are the same.
    return ref.shape == got.shape or (ref.size == got.size and
                                      tuple(d for d in ref.shape if d != 1) == tuple(d for d in got.shape if d != 1))


def toolkit_failed(call, detail):
    print(f"{call} failed: {detail}", flush=True)
    print("the toolkit call failed (see its log lines above)", flush=True)
    sys.exit(2)


def checked(call, fn, **kwargs):
    """Call a toolkit API; its -1 or exception ends the run as pytest-rknn's worker reports it."""
    print(f"[repro] {call}", flush=True)
    try:
        ret = fn(**kwargs)
    except Exception as exc:  # the toolkit raises for many errors instead of returning -1
        toolkit_failed(call, f"{call}() raised {exception_text(exc)}")
    if ret != 0:
        toolkit_failed(call, f"{call}() returned {ret}")


def exception_text(exc):
    """As pytest-rknn's worker words an exception: the toolkit re-raises with the inner traceback as the
    message, and the inner `XxxError: ...` with what follows it is the reason."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    starts = [i for i, line in enumerate(lines) if re.match(r"^\w+(Error|Exception):", line)]
    if starts:
        return " ".join(lines[starts[-1]:])
    return f"{type(exc).__name__}: {' '.join(lines)}"


def calibration_list(dataset, work):
    """The toolkit's dataset.txt with absolute paths (the bundle's may name files inside the bundle)."""
    with open(path_in_bundle(dataset)) as handle:
        rows = [line.split() for line in handle if line.strip()]
    path = os.path.join(work, "dataset.txt")
    with open(path, "w") as handle:
        handle.writelines(" ".join(path_in_bundle(p) for p in row) + "\n" for row in rows)
    return path


def run_simulator(config, samples):
    from rknn.api import RKNN

    # As pytest-rknn's worker: a verbose build (it prints the layer table), in a folder of its own (the
    # toolkit leaves files in the current directory), exported before init_runtime.
    work = os.path.join(HERE, "build")
    os.makedirs(work, exist_ok=True)
    os.chdir(work)
    rknn = RKNN(verbose=config.get("verbose", True))
    dataset = config.get("dataset")
    checked("config", rknn.config, target_platform=config["target"], **config["config"])
    checked("load_onnx", rknn.load_onnx, model=path_in_bundle(config["model"]))
    checked("build", rknn.build, do_quantization=config["quantize"],
            dataset=calibration_list(dataset, work) if dataset else None)
    checked("export_rknn", rknn.export_rknn, export_path=os.path.join(work, "rebuilt.rknn"))
    checked("init_runtime", rknn.init_runtime, target=None)
    try:
        return infer(rknn, config, samples)
    finally:
        rknn.release()


def run_board(config, samples):
    from rknnlite.api import RKNNLite

    lite = RKNNLite()
    core_mask = getattr(RKNNLite, config.get("core_mask") or "NPU_CORE_AUTO")
    checked("load_rknn", lite.load_rknn, path=path_in_bundle(config["rknn"]))
    checked("init_runtime", lite.init_runtime, core_mask=core_mask)
    try:
        return infer(lite, config, samples)
    finally:
        lite.release()


def infer(runtime, config, samples):
    """{sample: [outputs] or None}, as the worker and the board runner call inference()."""
    formats = config["data_format"]
    outputs = {}
    if not samples:
        print("[repro] every toolkit call before inference() succeeded here, and this bundle has no input arrays "
              "(pytest-rknn's failure came before inference()): the failure did not reproduce", flush=True)
        sys.exit(0)
    with np.load(os.path.join(HERE, "inputs.npz")) as data:
        for s in samples:
            arrays = [data[f"s{s}_i{i}"] for i in range(len(formats))]
            print(f"[repro] inference sample {s}", flush=True)
            outs = runtime.inference(inputs=arrays, data_format=formats)
            outputs[s] = None if outs is None else [np.asarray(o) for o in outs]
    return outputs


def load_arrays(name):
    """{sample: [arrays by output]} from a bundle file with keys s{sample}_o{output}; {} when it is absent."""
    path = os.path.join(HERE, name)
    if not os.path.exists(path):
        return {}
    found = {}  # type: dict
    with np.load(path) as data:
        for key in data.files:
            sample, output = key[1:].split("_o")
            found.setdefault(int(sample), {})[int(output)] = data[key]
    return {s: [by_output[k] for k in sorted(by_output)] for s, by_output in found.items()}


def compare(config, outputs, reference, simulated):
    """Print each check of each saved sample as pytest-rknn words it; the failing lines."""
    failing = []

    def report(line, failed):
        print(("FAIL " if failed else "ok   ") + line, flush=True)
        if failed:
            failing.append(line)

    labels = {item["index"]: item["label"] for item in config["samples"]}
    for s in sorted(outputs):
        if outputs[s] is None:
            report(f"sample {s} ({labels[s]}): inference() returned None", True)
    for k, spec in enumerate(config["outputs"]):
        where = f"output '{spec['name']}'"
        minimum, limit, least = spec.get("cosine_min"), spec.get("max_abs_max"), spec.get("vs_sim_cosine_min")
        max_abs = None
        for s in sorted(outputs):
            if outputs[s] is None or s not in reference:
                continue
            ref, got = reference[s][k], np.asarray(outputs[s][k])
            if not same_shape(ref, got):
                report(f"{where}: shape {tuple(got.shape)} does not match the reference {tuple(ref.shape)}", True)
                continue
            got = got.reshape(ref.shape)
            ref_bad, got_bad = ~np.isfinite(ref), ~np.isfinite(got)
            unexpected = int((got_bad & ~ref_bad).sum())
            if unexpected:
                report(f"{where} sample {s}: {unexpected} NaN/Inf values where the reference is finite", True)
                continue
            keep = ~(ref_bad | got_bad)
            ref_f, got_f = ref[keep].astype(np.float64), got[keep].astype(np.float64)
            value = cosine(got_f, ref_f)
            if minimum is not None:
                if value >= minimum:
                    report(f"{where} sample {s} ({labels[s]}): cosine {format_cosine(value, minimum)} >= min {minimum}",
                           False)
                else:
                    why = " (undefined: an all-zero side)" if math.isnan(value) else ""
                    report(f"{where} sample {s} ({labels[s]}): cosine {format_cosine(value, minimum)} < min {minimum}"
                           f"{why}", True)
            if ref_f.size:
                max_abs = max(max_abs or 0.0, float(np.abs(got_f - ref_f).max()))
            if least is not None and s in simulated:
                against = cosine(got.ravel(), np.asarray(simulated[s][k]).reshape(ref.shape).ravel())
                word = ">=" if against >= least else "<"
                report(f"{where} sample {s}: board vs simulator cosine {format_cosine(against, least)} {word} "
                       f"checks.vs_sim_cosine min {least}", not against >= least)
        if limit is not None and max_abs is not None:
            word = "<=" if max_abs <= limit else ">"
            report(f"{where}: max abs error {max_abs:.6g} {word} max {limit}", not max_abs <= limit)
    return failing


def main():
    with open(os.path.join(HERE, "repro.json")) as handle:
        config = json.load(handle)
    print(f"[repro] {config['item']}: {config['failure_class']}: {config['message']}", flush=True)
    samples = [item["index"] for item in config["samples"]]
    run = run_board if config["backend"] == "board" else run_simulator
    outputs = run(config, samples)
    got = {f"s{s}_o{k}": array for s, arrays in outputs.items() if arrays is not None for k, array in enumerate(arrays)}
    if got:
        np.savez(os.path.join(HERE, "repro_outputs.npz"), **got)  # this run's outputs, beside the saved ones
    failing = compare(config, outputs, load_arrays("reference.npz"), load_arrays("simulator_outputs.npz"))
    if failing:
        print(f"[repro] reproduced: {len(failing)} failing check(s); the first: {failing[0]}", flush=True)
        return 1
    print("[repro] every check that repro.py recomputes (per output: shape, NaN/Inf, cosine, max abs, board vs "
          "simulator) passed on the saved samples. pytest-rknn's failure was: " + "; ".join(config["failures"]),
          flush=True)
    print("[repro] repro.py does not recompute detection, placement, latency, baseline or gate checks: compare "
          "outputs.npz (what the run got) and your own run's outputs with reference.npz", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
