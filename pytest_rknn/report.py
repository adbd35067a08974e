"""The terminal summary: one table of spec x version x backend."""

from __future__ import annotations

from typing import Dict, List, Tuple

from .result import RunResult, format_cosine


def summary_row(result: RunResult) -> Dict:
    """A JSON-able row; travels in report.user_properties so pytest-xdist workers deliver it too."""
    return {
        "spec": result.spec,
        "version": result.version,
        "backend": result.backend,
        "outcome": "passed" if result.passed else "failed",
        "class": result.failure_class or "",
        "cosine": {m.name: m.worst_cosine for m in result.outputs},
        "vs_sim": {m.name: m.vs_sim_cosine for m in result.outputs if m.vs_sim_cosine is not None},
        "message": result.message,
        "map50": _map50_text(result.detection),
    }


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
    if result.board:
        props += [(f"rknn.board.{k}", str(v)) for k, v in result.board.items() if v and k != "compatible"]
    return props


def _map50_text(detection) -> str:
    """mAP@0.5 against ground truth (onnxruntime's in brackets), else agreement with onnxruntime."""
    if detection is None:
        return ""
    if detection.map50 is not None:
        return f"{detection.map50:.3f} (ort {detection.ref_map50:.3f})"
    return f"agree {detection.agreement_map50:.3f}"


def _cosine_text(cosines: Dict[str, float]) -> str:
    if not cosines:
        return "-"
    if len(cosines) == 1:
        return format_cosine(next(iter(cosines.values())))
    return "  ".join(f"{name} {format_cosine(value)}" for name, value in cosines.items())




def summary_table(rows: List[Dict]) -> List[str]:
    header = ["spec", "version", "backend", "worst cosine per output", "board vs sim", "mAP@0.5", "outcome", "class"]
    body = [[r["spec"], r["version"], r["backend"], _cosine_text(r["cosine"]), _cosine_text(r.get("vs_sim", {})),
             r.get("map50") or "-", r["outcome"], r["class"] or "-"]
            for r in sorted(rows, key=lambda r: (r["spec"], r["version"], r["backend"] != "sim", r["backend"]))]
    for column, key in ((5, "map50"), (4, "vs_sim")):  # drop columns no row fills
        if not any(r.get(key) for r in rows):
            header.pop(column)
            for row in body:
                row.pop(column)
    widths = [max(len(str(row[i])) for row in [header] + body) for i in range(len(header))]
    fmt = lambda row: "  ".join(str(cell).ljust(width) for cell, width in zip(row, widths)).rstrip()
    return [fmt(header), fmt(["-" * w for w in widths])] + [fmt(row) for row in body]
