"""The terminal summary (one table of spec x version x backend) and the JUnit XML properties."""

from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional, Tuple

from .comparisons import RELATIVE, worst_per_family
from .result import MOVED, RunResult, format_cosine


def junit_properties(result: RunResult) -> List[Tuple[str, str]]:
    """Flat name/value pairs for the JUnit XML <properties> of an item."""
    props = [("rknn.version", result.version), ("rknn.backend", result.backend),
             ("rknn.outcome", "passed" if result.passed else "failed")]
    if result.failure_class:
        props.append(("rknn.class", result.failure_class))
    if result.toolkit_version:
        props.append(("rknn.toolkit_version", result.toolkit_version))
    if result.rknn_sha256:
        props.append(("rknn.rknn_sha256", result.rknn_sha256))
    for m in result.outputs:
        props.append((f"rknn.cosine.{m.name}", f"{m.worst_cosine:.8f}"))
        props.append((f"rknn.max_abs.{m.name}", f"{m.max_abs:.6g}"))
        if m.vs_sim_cosine is not None:
            props.append((f"rknn.vs_sim_cosine.{m.name}", f"{m.vs_sim_cosine:.8f}"))
    if result.detection is not None:
        d = result.detection
        for key in ("map50", "map", "ref_map50", "ref_map", "agreement_map50", "agreement_map"):
            if getattr(d, key) is not None:
                props.append((f"rknn.yolov5.{key}", f"{getattr(d, key):.4f}"))
    if result.profile is not None:
        p = result.profile
        props += [(f"rknn.profile.{key}", _number_text(getattr(p, key))) for key in PROFILE_PROPERTIES
                  if getattr(p, key) is not None]
        props += [(f"rknn.profile.cpu_layer.{layer.node}", f"{layer.op_type}: {layer.reason or 'no reason given'}")
                  for layer in p.cpu_layers]
    if result.latency is not None:
        props += [(f"rknn.latency.{key}", str(result.latency[key])) for key in ("median_ms", "p90_ms", "runs",
                                                                              "core_mask") if key in result.latency]
    if result.board:
        props += [(f"rknn.board.{k}", str(v)) for k, v in result.board.items() if v and k != "compatible"]
    for key in ("model_sha256", "config_hash"):
        if result.fingerprint.get(key):
            props.append((f"rknn.{key}", result.fingerprint[key]))
    props += [(f"rknn.host.{name}", version) for name, version in result.fingerprint.get("host", {}).items()]
    for comparison in result.comparisons:
        prefix = f"rknn.vs.{comparison['against']}"
        if comparison.get("missing"):
            props.append((prefix, "missing"))
        for name, delta in comparison.get("deltas", {}).items():
            props.append((f"{prefix}.{name}", f"{delta['delta']:+.6g}"))
    return props


def _number_text(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


PROFILE_PROPERTIES = ("npu_ops", "cpu_ops", "cycles", "internal_memory", "weight_memory", "rknn_bytes", "build_seconds")


def profile_text(record: Dict) -> str:
    """`NPU 1 CPU 1 (AveragePool) 2.3k cyc 17KB` for a sim item, `1.21 ms (p90 1.40)` for a board item."""
    profile, latency = record.get("profile"), record.get("latency")
    if latency:
        return f"{latency['median_ms']:.3g} ms (p90 {latency['p90_ms']:.3g})"
    if not profile:
        return "-"
    cpu = profile["cpu_layers"]
    types = sorted({layer["op_type"] for layer in cpu})
    where = f"NPU {profile['npu_ops']} CPU {profile['cpu_ops']}" + (f" ({', '.join(types)})" if types else "")
    memory = [m for m in (profile.get("internal_memory"), profile.get("weight_memory")) if m is not None]
    costs = ([f"{_si(profile['cycles'])} cyc"] if profile.get("cycles") is not None else []) + (
        [_bytes(sum(memory))] if memory else [])
    return "  ".join([where, *costs])


def _si(value: float) -> str:
    """2304 -> 2.3k, 1.2e9 -> 1.2G."""
    for unit in ("", "k", "M"):
        if abs(value) < 1000:
            return f"{value:.3g}{unit}" if unit else f"{value:g}"
        value /= 1000
    return f"{value:.3g}G"


def _bytes(value: float) -> str:
    """17088 -> 16.7KB (1 KB = 1024 bytes, as the toolkit counts)."""
    for unit in ("B", "KB", "MB"):
        if value < 1024:
            return f"{value:.3g}{unit}"
        value /= 1024
    return f"{value:.3g}GB"


def _map50_text(detection: Optional[dict]) -> str:
    """mAP@0.5 against ground truth (onnxruntime's in brackets), else agreement with onnxruntime."""
    if not detection:
        return ""
    if detection.get("map50") is not None:
        return f"{detection['map50']:.3f} (ort {detection['ref_map50']:.3f})"
    return f"agree {float(detection['agreement_map50']):.3f}"


def _cosine_text(metrics: Dict[str, float], prefix: str) -> str:
    cosines = {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}
    if not cosines:
        return "-"
    if len(cosines) == 1:
        return format_cosine(_float(next(iter(cosines.values()))))
    return "  ".join(f"{name} {format_cosine(_float(value))}" for name, value in cosines.items())


def _float(value) -> float:
    return float(value)  # NaN travels as the string "nan"


def comparison_text(comparison: dict) -> str:
    """`cos -0.00031  mAP50 -0.012!`: the worst change per metric family; `!` where it failed."""
    if comparison.get("missing"):
        return "no baseline" if comparison["against"] == "baseline" else "n/a"
    worst = worst_per_family(comparison["deltas"])
    return "  ".join(f"{FAMILY_LABELS.get(f, f)} {delta_text(d, f)}" for f, d in worst.items()) or "-"


def delta_text(delta: dict, family: str = "") -> str:
    """`+0.0012`, or `+12%` for a cost compared relatively; `!` where it failed."""
    if not delta["delta"]:
        text = "="
    elif family in RELATIVE and delta["reference"]:
        text = f"{delta['delta'] / delta['reference']:+.0%}"
    else:
        text = f"{delta['delta']:+.2g}"
    return text + ("!" if delta["failed"] else "")


FAMILY_LABELS = {"cosine": "cos", "vs_sim_cosine": "vs-sim", "map50": "mAP50", "agreement_map50": "agree50",
                 "map": "mAP", "cpu_ops": "cpu", "cycles": "cyc", "memory": "mem", "latency": "lat"}


def spec_titles(records: List[Dict]) -> Dict[Tuple[str, str], str]:
    """(spec, spec_file) -> how the reports name the spec: its name, and where two spec files
    share a name, the name and the file."""
    keys = {(str(r.get("spec") or "?"), str(r.get("spec_file") or "")) for r in records}
    names = [name for name, _ in keys]
    return {(name, file): f"{name} ({_shown(file)})" if names.count(name) > 1 and file else name
            for name, file in keys}


def _shown(path: str) -> str:
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return path


def spec_key(record: Dict) -> Tuple[str, str]:
    return str(record.get("spec") or "?"), str(record.get("spec_file") or "")


def summary_table(records: List[Dict]) -> List[str]:
    against = sorted({c["against"] for r in records for c in r.get("comparisons", [])}, key=lambda a: a != "baseline")
    header = ["spec", "version", "backend", "worst cosine per output", "board vs sim", "mAP@0.5", "where / cost"]
    header += [f"vs {a}" for a in against] + ["outcome", "class", "cache"]
    body = []
    titles = spec_titles(records)
    for r in sorted(records, key=lambda r: (titles[spec_key(r)], r["version"], r["backend"] != "sim", r["backend"])):
        by_against = {c["against"]: c for c in r.get("comparisons", [])}
        body.append([titles[spec_key(r)], r["version"], r["backend"], _cosine_text(r["metrics"], "cosine."),
                     _cosine_text(r["metrics"], "vs_sim_cosine."), _map50_text(r.get("detection")) or "-",
                     profile_text(r)]
                    + [comparison_text(by_against[a]) if a in by_against else "-" for a in against]
                    + [r["outcome"], r["class"] or "-", r.get("cache") or "-"])
    for column in (len(header) - 1, 6, 5, 4):  # drop the cache, profile, mAP, board columns when no row fills them
        if all(row[column] in ("-", "off") for row in body):
            header.pop(column)
            for row in body:
                row.pop(column)
    widths = [max(len(str(row[i])) for row in [header] + body) for i in range(len(header))]
    fmt = lambda row: "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(row) for row in body]


def board_lines(records: List[Dict]) -> List[str]:
    """Per board, what ran there: the board items, and how many of them came from a board that did not
    answer or went away. Nothing for a run on one board where nothing moved."""
    ran: Dict[str, int] = {}
    moved: Dict[str, int] = {}
    for record in records:
        address = as_dict(as_dict(record.get("fingerprint")).get("board")).get("address")
        if record.get("backend") != "board" or not address:
            continue
        ran[address] = ran.get(address, 0) + 1
        if any(str(w).startswith(MOVED) for w in record.get("warnings") or []):
            moved[address] = moved.get(address, 0) + 1
    if len(ran) < 2 and not moved:
        return []
    lines = []
    for address in sorted(ran):
        took_over = f", {moved[address]} of them for a board that did not answer or went away" if address in moved else ""
        lines.append(f"board {address}: {ran[address]} item{'s' if ran[address] != 1 else ''}{took_over}")
    return [""] + lines


def as_dict(value) -> Dict:
    """`value` when it is a dict, else an empty one (records read from JSON may hold anything)."""
    return value if isinstance(value, dict) else {}
