"""The HTML report (`--rknn-html`): one self-contained page (inline CSS and SVG, images as data:
URIs, no JavaScript) with a section per spec: results table, charts, where the layers run (with
the toolkit's cost estimates), detection overlays, failure details and fingerprints. Every text
from the document is escaped."""

from __future__ import annotations

import base64
import html
import math
import mimetypes
import re
from collections import Counter
from pathlib import Path
from typing import Dict, List, Optional, Tuple

from . import report_charts as charts
from .atomic import write_atomic
from .comparisons import worst_per_family
from .report import FAMILY_LABELS, delta_text, spec_key, spec_titles
from .report import as_dict as _dict
from .result import format_cosine

CLASS_COLOURS = {"ACCURACY": "#d1412f", "BUILD": "#8e44ad", "CRASH": "#7b1c1c", "TIMEOUT": "#b35c00",
                 "SPEC": "#2c6e91", "ENV": "#5f6b73", "PLACEMENT": "#c2185b", "PERFORMANCE": "#00838f",
                 "INTERNAL": "#000000", "skipped": "#9aa0a6"}
IMAGE_TYPES = {b"\x89PNG": "image/png", b"\xff\xd8\xff": "image/jpeg", b"GIF8": "image/gif"}


THUMBNAIL_WIDTH = 320  # px: a passed item's overlay (two panels side by side) is embedded this wide
THUMBNAIL_QUALITY = 80  # JPEG


def write_html_report(path: Path, document: dict) -> None:
    """`document`'s overlay paths may be relative to the report's folder (the copies next to it,
    report_assets): the page embeds them and links them."""
    write_atomic(path, render(_resolved(document, Path(path).parent)))


def _resolved(document: dict, folder: Path) -> dict:
    """A shallow copy whose relative overlay paths are resolved against `folder`, each with its
    relative path as `overlay_links` (the link from the page)."""
    items = []
    for record in _list(document.get("items")):
        detection = _dict(record.get("detection")) if isinstance(record, dict) else {}
        paths = [str(p) for p in _list(detection.get("overlays")) if p]
        if any(not Path(p).is_absolute() for p in paths):
            links = [None if Path(p).is_absolute() else p for p in paths]
            detection = dict(detection, overlays=[str(folder / p) for p in paths], overlay_links=links)
            record = dict(record, detection=detection)
        items.append(record)
    return dict(document, items=items)


def render(document: dict) -> str:
    items = [r for r in _list(document.get("items")) if isinstance(r, dict)]
    by_spec: Dict[str, List[dict]] = {}
    titles = spec_titles(items)  # two spec files of the same name stay two sections
    for record in items:
        by_spec.setdefault(titles[spec_key(record)], []).append(record)
    for records in by_spec.values():
        records.sort(key=_item_order)
    specs = sorted(by_spec.items())
    body = [_header(document, items), _overview(specs)] + [_spec_section(name, records) for name, records in specs]
    return PAGE.format(css=CSS, title=_e(f"pytest-rknn report {document.get('created') or ''}".strip()),
                       body="\n".join(body))


# ------------------------------------------------------------------ small helpers


def _e(value) -> str:
    return "" if value is None else html.escape(str(value), quote=True)


def _number(value) -> Optional[float]:
    """A float (NaN and Inf included: they travel as "nan"/"inf") or None when there is none."""
    if value is None or isinstance(value, bool):
        return None
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _finite(value) -> Optional[float]:
    number = _number(value)
    return number if number is not None and math.isfinite(number) else None


def _fixed(value, decimals: int = 3) -> str:
    number = _number(value)
    if number is None:
        return "-"
    return f"{number:.{decimals}f}" if math.isfinite(number) else str(number)


def _cosine(value, threshold=None) -> str:
    number = _number(value)
    if number is None:
        return "-"
    if not math.isfinite(number):
        return str(number)
    return format_cosine(number, _finite(threshold))


def _version_key(version) -> Tuple:
    """2.10.0 after 2.5.0."""
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in re.split(r"[.\-+]", str(version)))


def _item_order(record: dict) -> Tuple:
    backend = str(record.get("backend") or "")
    return _version_key(record.get("version") or ""), backend != "sim", backend


def _item_label(record: dict) -> str:
    return f"{record.get('version') or '?'} {record.get('backend') or '?'}"


def _item_name(record: dict) -> str:
    return f"{record.get('spec') or '?'}[{record.get('version') or '?'}-{record.get('backend') or '?'}]"


def _anchor(*parts) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "-", "-".join(str(p) for p in parts))


def _failed(record: dict) -> bool:
    return record.get("outcome") not in ("passed", "skipped")


def _class_of(record: dict) -> str:
    if _failed(record):
        return str(record.get("class") or "FAILED")
    return "skipped" if record.get("outcome") == "skipped" else "passed"


def _badge(text: str) -> str:
    colour = "#2e8b57" if text == "passed" else CLASS_COLOURS.get(text, "#c0392b")
    return f'<span class="badge" style="background:{colour}">{_e(text)}</span>'


def _list(value) -> list:
    return value if isinstance(value, list) else []


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def _seconds(value: float) -> str:
    return f"{value:.1f} s" if value >= 10 else f"{value:.2f} s"


def _prefixed(metrics: dict, prefix: str) -> Dict[str, object]:
    return {k[len(prefix):]: v for k, v in metrics.items() if k.startswith(prefix)}


# ------------------------------------------------------------------ header and overview


def _header(document: dict, items: List[dict]) -> str:
    meta = [f"created {_e(document.get('created') or '?')}"]
    if document.get("compare_to"):
        meta.append(f"compared to toolkit <b>{_e(document['compare_to'])}</b>")
    if document.get("baseline"):
        meta.append(f"baseline <code>{_e(document['baseline'])}</code>")
    host = _dict(document.get("host"))
    host_text = " · ".join(f"{_e(k)} <b>{_e(v)}</b>" for k, v in host.items()) or "-"
    return (f'<header><h1>pytest-rknn report</h1><p class="meta">{" · ".join(meta)}</p>'
            f'<p class="totals">{_totals(items)}</p><p class="host">host: {host_text}</p></header>')


def _totals(items: List[dict]) -> str:
    outcomes = Counter(_class_of(r) for r in items)
    failures = {name: n for name, n in sorted(outcomes.items()) if name not in ("passed", "skipped")}
    failed = sum(failures.values())
    classes = ", ".join(f"{_badge(name)} {n}" for name, n in failures.items())
    parts = [f"<b>{len(items)}</b> items", f'<b>{outcomes.get("passed", 0)}</b> passed']
    if outcomes.get("skipped"):
        parts.append(f'<b>{outcomes["skipped"]}</b> skipped')
    if failed:
        parts.append(f"<b>{failed}</b> failed: {classes}")
    return " · ".join(parts)


def _overview(specs: List[Tuple[str, List[dict]]]) -> str:
    """One row per spec, one column per version-backend: the outcome of every item at a glance."""
    examples = {_item_label(r): r for _, records in specs for r in records}
    columns = sorted(examples, key=lambda label: _item_order(examples[label]))
    head = "".join(f"<th>{_e(label)}</th>" for label in columns)
    rows = []
    for name, records in specs:
        cells = {_item_label(r): r for r in records}
        tds = "".join(f"<td>{_badge(_class_of(cells[c])) if c in cells else ''}</td>" for c in columns)
        rows.append(f'<tr><th class="spec"><a href="#{_anchor("spec", name)}">{_e(name)}</a></th>{tds}</tr>')
    return (f'<section class="overview"><h2>Overview</h2><div class="scroll"><table>'
            f'<tr><th>spec</th>{head}</tr>{"".join(rows)}</table></div></section>')


# ------------------------------------------------------------------ one spec


def _spec_section(name: str, records: List[dict]) -> str:
    failed = sum(_failed(r) for r in records)
    status = _badge("passed") if not failed else _badge(f"{failed} failed")
    spec_file = next((r.get("spec_file") for r in records if r.get("spec_file")), None)
    parts = [f'<section class="spec" id="{_anchor("spec", name)}"><h2>{_e(name)} {status}</h2>']
    if spec_file:
        parts.append(f'<p class="path">{_e(spec_file)}</p>')
    parts += [_results_table(name, records), _notes(records), _charts(records), _where_it_runs(records),
              _detection(records), _failure_details(name, records), _fingerprints(records), "</section>"]
    return "\n".join(p for p in parts if p)


def _comparison_columns(records: List[dict]) -> List[str]:
    against = {str(c.get("against")) for r in records for c in _list(r.get("comparisons")) if isinstance(c, dict)}
    return sorted(against, key=lambda a: (a != "baseline", _version_key(a)))


def _results_table(name: str, records: List[dict]) -> str:
    against = _comparison_columns(records)
    board = any(_vs_sim_cosines(r) for r in records)
    latency = any(_dict(r.get("latency")) for r in records)
    detector = any(_dict(r.get("detection")) for r in records)
    head = ["version", "backend", "worst cosine per output"] + (["board vs sim"] if board else [])
    head += ["board latency"] if latency else []
    head += (["mAP@0.5 (onnxruntime)"] if detector else []) + [f"vs {a}" for a in against]
    head += ["outcome", "class", "time"]
    rows = []
    for record in records:
        cells = [_e(record.get("version")), _e(record.get("backend")), _cosine_cell(record)]
        if board:
            cells.append(_cosine_list(_vs_sim_cosines(record), {}))
        if latency:
            cells.append(_latency_cell(_dict(record.get("latency"))))
        if detector:
            cells.append(_map_cell(_dict(record.get("detection"))))
        by_against = {str(c.get("against")): c for c in _list(record.get("comparisons")) if isinstance(c, dict)}
        cells += [_comparison_cell(by_against.get(a), a == record.get("version")) for a in against]
        cells += [_outcome_cell(name, record), _badge(_class_of(record)) if _failed(record) else "-",
                  _time_cell(_dict(record.get("timings")))]
        row_class = ' class="failed"' if _failed(record) else ""
        rows.append(f"<tr{row_class}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<div class="scroll"><table class="results"><tr>{"".join(f"<th>{_e(h)}</th>" for h in head)}</tr>'
            f'{"".join(rows)}</table></div>')


def _latency_cell(latency: dict) -> str:
    """The board's median inference() time, its p90 and the core mask it ran on."""
    if not latency:
        return "-"
    title = f"{latency.get('runs', '?')} runs after {latency.get('warmup', '?')} warm-up runs"
    return (f'<span class="num" title="{_e(title)}">{_ms(latency.get("median_ms"))}</span> '
            f'<span class="muted">p90 {_ms(latency.get("p90_ms"))}</span>'
            f'<div class="muted">core mask {_e(latency.get("core_mask") or "?")}</div>')


def _ms(value) -> str:
    number = _finite(value)
    if number is None:
        return "-"
    return f"{number:.3g} ms" if number < 1000 else f"{number:.0f} ms"


def _worst_cosines(record: dict) -> Dict[str, object]:
    """Output name -> worst cosine, in the model's output order; outputs without one too (as None)."""
    cosines: Dict[str, object] = {}
    for output in _list(record.get("outputs")):
        if isinstance(output, dict) and output.get("name") is not None:
            cosines[str(output["name"])] = output.get("worst_cosine")
    cosines.update(_prefixed(_dict(record.get("metrics")), "cosine."))
    return cosines


def _vs_sim_cosines(record: dict) -> Dict[str, object]:
    found = {str(o["name"]): o["vs_sim_cosine"] for o in _list(record.get("outputs"))
             if isinstance(o, dict) and o.get("name") is not None and o.get("vs_sim_cosine") is not None}
    found.update(_prefixed(_dict(record.get("metrics")), "vs_sim_cosine."))
    return found


def _cosine_cell(record: dict) -> str:
    thresholds = _prefixed(_dict(record.get("thresholds")), "cosine.")
    cell = _cosine_list(_worst_cosines(record), thresholds)
    problems = [_output_problem(o) for o in _list(record.get("outputs")) if isinstance(o, dict)]
    return cell + "".join(f'<div class="bad">{_e(p)}</div>' for p in problems if p)


def _cosine_list(cosines: Dict[str, object], thresholds: Dict[str, object]) -> str:
    """`name value` lines in a two-column grid; values under their threshold (or NaN) in red."""
    if not cosines:
        return "-"
    lines = []
    for name, value in cosines.items():
        threshold, number = thresholds.get(name), _number(value)
        limit = _finite(threshold)
        bad = number is not None and (not math.isfinite(number) or (limit is not None and number < limit))
        title = f' title="min {_e(threshold)}"' if threshold is not None else ""
        lines.append(f'<span class="name">{_e(name)}</span>'
                     f'<span class="num{" bad" if bad else ""}"{title}>{_e(_cosine(value, threshold))}</span>')
    return f'<div class="pairs">{"".join(lines)}</div>'


def _output_problem(output: dict) -> str:
    name = output.get("name")
    if output.get("shape_ok") is False:
        return f"{name}: shape {output.get('shape')} vs onnxruntime {output.get('ref_shape')}"
    if output.get("missing"):
        return f"{name}: missing in {output['missing']} samples"
    if output.get("nonfinite"):
        return f"{name}: {output['nonfinite']} NaN/Inf values"
    return ""


def _map_cell(detection: dict) -> str:
    if not detection:
        return "-"
    if _number(detection.get("map50")) is not None:
        title = f"mAP@0.5:0.95 {_fixed(detection.get('map'))} (onnxruntime {_fixed(detection.get('ref_map'))})"
        return (f'<span class="num" title="{_e(title)}">{_fixed(detection["map50"])}</span> '
                f'<span class="muted">({_fixed(detection.get("ref_map50"))})</span>')
    return f'<span class="muted">agreement</span> <span class="num">{_fixed(detection.get("agreement_map50"))}</span>'


def _comparison_cell(comparison: Optional[dict], is_reference: bool = False) -> str:
    if comparison is None:
        return '<span class="muted">reference</span>' if is_reference else "-"
    source = f"source: {comparison.get('source') or '?'}"
    if "deltas" not in comparison:
        text = "no baseline" if comparison.get("against") == "baseline" else "n/a"
        reason = comparison.get("missing") or ""
        return f'<span class="muted" title="{_e(reason)}&#10;{_e(source)}">{text}</span>'
    deltas = comparison["deltas"]
    worst = worst_per_family(deltas)
    title = "&#10;".join([_e(source)] + [_e(_delta_line(k, v)) for k, v in deltas.items()])
    lines = [f'<span class="{"bad" if d.get("failed") else ""}">{_e(FAMILY_LABELS.get(f, f))} '
             f'{_e(delta_text(d))}</span>' for f, d in worst.items()]
    return f'<div class="deltas" title="{title}">{"<br>".join(lines) or "-"}</div>'


def _delta_line(name: str, delta: dict) -> str:
    allowed = _number(delta.get("allowed"))
    return (f"{name}: {_fixed(delta.get('value'), 6)} vs {_fixed(delta.get('reference'), 6)}"
            f" ({delta_text(delta)}{'' if allowed is None else f', allowed {allowed:g}'})")


def _outcome_cell(spec: str, record: dict) -> str:
    if not _failed(record):
        return _badge(_class_of(record))
    return f'{_badge("failed")} <a href="#{_anchor("fail", spec, _item_label(record))}">details</a>'


def _time_cell(timings: dict) -> str:
    finite = {k: _finite(v) for k, v in timings.items()}
    steps = {k: v for k, v in finite.items() if v is not None}
    if not steps:
        return "-"
    title = "&#10;".join(f"{_e(k)}: {_seconds(v)}" for k, v in steps.items())
    return f'<span class="num" title="{title}">{_seconds(sum(steps.values()))}</span>'


def _notes(records: List[dict]) -> str:
    """Warnings of the items that passed (a failed item's are in its failure details)."""
    lines = [f"<li><b>{_e(_item_label(r))}</b>: {_e(w)}</li>"
             for r in records if not _failed(r) for w in _list(r.get("warnings"))]
    return f'<ul class="notes">{"".join(lines)}</ul>' if lines else ""


# ------------------------------------------------------------------ charts


def _charts(records: List[dict]) -> str:
    groups = _cosine_groups(records)
    svgs = []
    if any(group.bars for group in groups):  # not when every item failed before it had outputs
        svgs.append(charts.bar_chart("Worst cosine per output (vs onnxruntime)", groups))
    trend = _trend_groups(records)
    if trend:
        svgs.append(charts.bar_chart("Worst cosine per output, before and now", trend, threshold_name="gate"))
    if any(_dict(r.get("detection")) for r in records):
        svgs.append(_map_chart(records))
    if any(_dict(r.get("latency")) for r in records):
        svgs.append(_latency_chart([r for r in records if r.get("backend") == "board" or _dict(r.get("latency"))]))
    return '<div class="charts">' + "".join(svgs) + "</div>" if svgs else ""


def _cosine_groups(records: List[dict]) -> List[charts.Group]:
    names: List[str] = []
    for record in records:
        names += [n for n in _worst_cosines(record) if n not in names]
    groups = []
    for record in records:
        cosines, thresholds = _worst_cosines(record), _prefixed(_dict(record.get("thresholds")), "cosine.")
        bars = tuple(charts.Bar(label=name, value=_number(cosines.get(name)),
                                failed=_below(_number(cosines.get(name)), _finite(thresholds.get(name))),
                                threshold=_finite(thresholds.get(name)),
                                tooltip=f"{_item_label(record)} {name}: {_cosine(cosines.get(name))}")
                     for name in names) if cosines else ()
        groups.append(charts.Group(_item_label(record), bars, failed=_failed(record),
                                   empty_note=_class_of(record)))
    return groups


def _trend_groups(records: List[dict]) -> List[charts.Group]:
    """Per item, compared output and what it was compared with (the baseline, or the --rknn-compare-to
    version): the value then and now side by side; now is red when the gate failed it, and the gate's
    line is where its allowed worsening ends."""
    groups = []
    for record in records:
        for comparison in _list(record.get("comparisons")):
            deltas = _dict(_dict(comparison).get("deltas"))
            against = str(_dict(comparison).get("against"))
            for metric, delta in deltas.items():
                delta = _dict(delta)
                value, reference = _number(delta.get("value")), _number(delta.get("reference"))
                if not metric.startswith("cosine.") or value is None or reference is None:
                    continue
                allowed = _finite(delta.get("allowed"))
                line = round(reference - allowed, 6) if allowed is not None else None
                output = metric[len("cosine."):]
                bars = (charts.Bar(label=against, value=reference,
                                   tooltip=f"{output} at {against}: {_cosine(reference)}"),
                        charts.Bar(label="now", value=value, failed=bool(delta.get("failed")), threshold=line,
                                   tooltip=f"{_item_label(record)} {output} now: {_cosine(value)}"))
                groups.append(charts.Group(f"{_item_label(record)} {output}", bars,
                                           failed=bool(delta.get("failed"))))
    return groups


def _below(value: Optional[float], line: Optional[float]) -> bool:
    """A bar is red when its own metric is NaN or under its own line, whatever else failed the item."""
    if value is None or not math.isfinite(value):
        return True
    return line is not None and value < line


def _map_chart(records: List[dict]) -> str:
    """mAP@0.5 against the labels with onnxruntime's as the reference; without labels, the
    agreement with onnxruntime's detections (where onnxruntime scores 1.0)."""
    labelled = any(_number(_dict(r.get("detection")).get("map50")) is not None for r in records)
    key = "map50" if labelled else "agreement_map50"
    groups = []
    for record in records:
        detection = _dict(record.get("detection"))
        line = _finite(_dict(record.get("thresholds")).get(key))
        value = _number(detection.get(key))
        bars = (charts.Bar(label="", value=value, failed=_below(value, line), threshold=line,
                           tooltip=f"{_item_label(record)}: {_fixed(detection.get(key))}"),) if detection else ()
        reference = _finite(detection.get("ref_map50")) if labelled else None
        groups.append(charts.Group(_item_label(record), bars, failed=_failed(record), reference=reference,
                                   empty_note=_class_of(record)))
    title = "mAP@0.5 against the labels" if labelled else "Agreement mAP@0.5 with onnxruntime"
    return charts.bar_chart(title, groups, value_decimals=3, units=charts.FRACTION, threshold_name="gate")


# ------------------------------------------------------------------ where it runs


def _where_it_runs(records: List[dict]) -> str:
    """Per version: the layers on the NPU and on the CPU (each with the toolkit's reason and the
    op_target that asks for the NPU), then the toolkit's estimates across versions."""
    built = [r for r in records if r.get("backend") == "sim" or _dict(r.get("profile"))]
    if not any(_dict(r.get("profile")) for r in built):
        return ""
    lines = "".join(f"<li>{_placement(r)}</li>" for r in built)
    return f'<h3>Where it runs</h3><ul class="placement">{lines}</ul>{_profile_charts(built)}'


def _placement(record: dict) -> str:
    version = f"<b>{_e(record.get('version') or '?')}</b>"
    profile = _dict(record.get("profile"))
    if not profile:
        why = _class_of(record) if _failed(record) else "no layer table"
        return f'{version}: <span class="muted">no profile ({_e(why)})</span>'
    layers = [layer for layer in _list(profile.get("cpu_layers")) if isinstance(layer, dict)]
    npu, cpu = _whole(profile.get("npu_ops")), _whole(profile.get("cpu_ops"))
    cpu = len(layers) if cpu is None else cpu
    if not cpu and not layers:
        return f"{version}: all {_layer_count(npu)} on the NPU"
    return (f'{version}: {_layer_count(npu)} on the NPU, <span class="warn">{_layer_count(cpu)} on the CPU</span>'
            f"{_cpu_layers_table(layers)}{_op_target_all(layers)}")


def _whole(value) -> Optional[int]:
    number = _finite(value)
    return None if number is None else int(number)


def _layer_count(n: Optional[int]) -> str:
    return "? layers" if n is None else _count(n, "layer")


def _cpu_layers_table(layers: List[dict]) -> str:
    if not layers:
        return ""
    head = "".join(f"<th>{h}</th>" for h in ("op type", "node", "the toolkit's reason", "to ask for the NPU"))
    rows = "".join(_cpu_layer_row(layer) for layer in layers)
    return f'<div class="scroll"><table class="cpu-layers"><tr>{head}</tr>{rows}</table></div>'


def _cpu_layer_row(layer: dict) -> str:
    op_type, onnx = layer.get("op_type") or "?", layer.get("onnx_op_type")
    shown = f"{op_type} ({onnx})" if onnx and onnx != op_type else op_type
    reason = _e(layer["reason"]) if layer.get("reason") else '<span class="muted">none given</span>'
    tensor = layer.get("tensor")
    target = (f"<code>{_e(_op_target([tensor]))}</code>" if tensor
              else '<span class="muted">not an ONNX node</span>')
    cells = [_e(shown), f"<code>{_e(layer.get('node') or '?')}</code>", reason, target]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _op_target_all(layers: List[dict]) -> str:
    tensors = [str(layer["tensor"]) for layer in layers if layer.get("tensor")]
    if len(tensors) < 2:
        return ""
    return f'<p class="op-target">all of them, under <code>convert:</code> <code>{_e(_op_target(tensors))}</code></p>'


def _op_target(tensors: List[str]) -> str:
    """The spec line that asks the toolkit for the NPU (YAML single quotes double inside)."""
    pairs = ", ".join("'{}': 'npu'".format(str(t).replace("'", "''")) for t in tensors)
    return f"op_target: {{{pairs}}}"


PROFILE_CHARTS = (("Estimated cycles", "cycles", charts.CYCLES, " cycles"),
                  ("Estimated memory (internal + weight)", "memory", charts.BYTES, ""),
                  (".rknn file size", "rknn_bytes", charts.BYTES, ""),
                  ("CPU layers", "cpu_ops", charts.COUNT, ""))


def _profile_charts(records: List[dict]) -> str:
    """Small multiples across versions: one chart per quantity of the profiles, a bar per version;
    none for a quantity that is unknown or 0 everywhere (no CPU layers)."""
    svgs = [charts.quantity_chart(title, _profile_groups(records, key, units, noun), units)
            for title, key, units, noun in PROFILE_CHARTS
            if any(_profile_value(_dict(r.get("profile")), key) for r in records)]
    if not svgs:
        return ""
    caption = ("Per version, from its build: cycles and memory are the toolkit's estimates for the target "
               "(its layer table), not measurements; the .rknn size is the file's.")
    if any(_failed(r) for r in records):
        caption += " Red: that version's item failed."
    return (f'<figure class="profile"><div class="charts">{"".join(svgs)}</div>'
            f'<figcaption>{_e(caption)}</figcaption></figure>')


def _profile_groups(records: List[dict], key: str, units: charts.Units, noun: str) -> List[charts.Group]:
    groups = []
    for record in records:
        profile, label = _dict(record.get("profile")), str(record.get("version") or "?")
        bars: Tuple[charts.Bar, ...] = ()
        if profile:
            value = _profile_value(profile, key)
            text = "" if value is None else units.text(value) + noun
            bars = (charts.Bar(label="", value=value, failed=_failed(record), text=text,
                               tooltip=f"{label}: {_profile_tooltip(profile, key, text)}"),)
        groups.append(charts.Group(label, bars, failed=_failed(record),
                                   empty_note=_class_of(record) if _failed(record) else "no profile"))
    return groups


def _profile_value(profile: dict, key: str) -> Optional[float]:
    if key != "memory":
        return _finite(profile.get(key))
    known = [v for v in (_finite(profile.get("internal_memory")), _finite(profile.get("weight_memory")))
             if v is not None]
    return sum(known) if known else None


def _profile_tooltip(profile: dict, key: str, text: str) -> str:
    if key != "memory":
        return text or "n/a"
    parts = [f"{name} {charts.BYTES.text(v)}" for name, v in (("internal", _finite(profile.get("internal_memory"))),
                                                             ("weight", _finite(profile.get("weight_memory"))))
             if v is not None]
    return " + ".join(parts) or "n/a"


def _latency_chart(records: List[dict]) -> str:
    """The board's median inference() time per version, a whisker up to its p90."""
    groups = []
    for record in records:
        latency = _dict(record.get("latency"))
        median, p90 = _finite(latency.get("median_ms")), _finite(latency.get("p90_ms"))
        bars = (charts.Bar(label="", value=median, failed=_failed(record), whisker=p90,
                           text="" if median is None else _ms(median),
                           tooltip=f"{_item_label(record)}: median {_ms(median)}, p90 {_ms(p90)}"),) if latency else ()
        groups.append(charts.Group(_item_label(record), bars, failed=_failed(record),
                                   empty_note=_class_of(record) if _failed(record) else "no latency"))
    return charts.quantity_chart("Board latency (median, p90 whisker)", groups, charts.MILLISECONDS)


# ------------------------------------------------------------------ detection


def _detection(records: List[dict]) -> str:
    detected = [r for r in records if _dict(r.get("detection"))]
    if not detected:
        return ""
    labelled = any(_number(_dict(r["detection"]).get("map50")) is not None for r in detected)
    head = ["item"] + (["mAP@0.5 (onnxruntime)", "mAP@0.5:0.95 (onnxruntime)"] if labelled else [])
    head += ["agreement mAP@0.5", "detections (onnxruntime)", "worst cosine per slice"]
    rows = "".join(_detection_row(r, _dict(r["detection"]), labelled) for r in detected)
    overlays = "".join(_overlays(r, _dict(r["detection"])) for r in detected)
    table = (f'<div class="scroll"><table class="detection"><tr>{"".join(f"<th>{h}</th>" for h in head)}</tr>'
             f'{rows}</table></div>')
    return f"<h3>Detection</h3>{table}{overlays}"


def _detection_row(record: dict, detection: dict, labelled: bool) -> str:
    def pair(key: str) -> str:
        if _number(detection.get(key)) is None:
            return "-"
        return (f'<span class="num">{_fixed(detection.get(key))}</span> '
                f'<span class="muted">({_fixed(detection.get("ref_" + key))})</span>')

    cells = [f'<span class="nowrap">{_e(_item_label(record))}</span>']
    cells += [pair("map50"), pair("map")] if labelled else []
    cells += [f'<span class="num">{_fixed(detection.get("agreement_map50"))}</span>',
              _counts_cell(_list(detection.get("counts"))), _slices_cell(_dict(detection.get("slice_cosines")))]
    row_class = ' class="failed"' if _failed(record) else ""
    return f"<tr{row_class}>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def _counts_cell(counts: list) -> str:
    rows = [c for c in counts if isinstance(c, (list, tuple)) and len(c) >= 3]
    if not rows:
        return "-"
    ours, theirs = sum(_finite(c[1]) or 0 for c in rows), sum(_finite(c[2]) or 0 for c in rows)
    differ = [c for c in rows if c[1] != c[2]]
    text = f"{ours:g} ({theirs:g}) in {_count(len(rows), 'image')}"
    if not differ:
        return _e(text)
    title = "&#10;".join(_e(f"{c[0]}: {c[1]} ({c[2]})") for c in differ)
    return f'{_e(text)}<br><span class="warn" title="{title}">{_count(len(differ), "image")} differ</span>'


def _slices_cell(slices: dict) -> str:
    """A grid: one row per output, one column per slice (boxes, objectness, classes)."""
    names: List[str] = []
    for parts in slices.values():
        names += [k for k in _dict(parts) if k not in names]
    if not names:
        return "-"
    cells = ["<span></span>"] + [f'<span class="muted">{_e(n)}</span>' for n in names]
    for output, parts in slices.items():
        cells.append(f'<span class="name">{_e(output)}</span>')
        for name in names:
            value = _dict(parts).get(name)
            bad = _number(value) is not None and _finite(value) is None
            cells.append(f'<span class="num{" bad" if bad else ""}">{_e(_cosine(value))}</span>')
    return f'<div class="slices" style="grid-template-columns: repeat({len(names) + 1}, auto)">{"".join(cells)}</div>'


def _overlays(record: dict, detection: dict) -> str:
    """A failed item's overlays embedded at full size; a passed item's as thumbnails, THUMBNAIL_WIDTH
    wide. Each links to its copy next to the report when there is one (`overlay_links`)."""
    paths = [p for p in _list(detection.get("overlays")) if p]
    if not paths:
        return ""
    failed = _failed(record)
    links = _list(detection.get("overlay_links"))
    figures = []
    for index, path in enumerate(paths):
        name = Path(str(path)).name
        uri = _data_uri(Path(str(path))) if failed else _thumbnail_uri(Path(str(path)))
        link = links[index] if index < len(links) and isinstance(links[index], str) else None
        caption = f"<figcaption>{_e(name)}</figcaption>"
        if link is not None:
            caption = f'<figcaption><a href="{_e(link)}">{_e(name)}</a></figcaption>'
        if uri is None:
            figures.append(f'<figure class="missing"><p>image not found: {_e(path)}</p>{caption}</figure>')
            continue
        image = f'<img src="{uri}" alt="{_e(name)}">'
        image = f'<a href="{_e(link)}">{image}</a>' if link is not None else image
        kind = "" if failed else ' class="thumbnail"'
        figures.append(f'<figure{kind}>{image}{caption}</figure>')
    open_attr = " open" if failed else ""
    size = "" if failed else f", thumbnails {THUMBNAIL_WIDTH} px wide"
    return (f'<details class="overlays"{open_attr}><summary>Detection overlays, {_e(_item_label(record))}: '
            f'onnxruntime | RKNN, {_count(len(paths), "worst image")}{size}</summary>'
            f'<div class="gallery">{"".join(figures)}</div></details>')


def _thumbnail_uri(path: Path) -> Optional[str]:
    """A data URI of the picture at most THUMBNAIL_WIDTH wide, as a JPEG, or the file itself when that
    is smaller; None when it cannot be read."""
    from io import BytesIO

    try:
        data = path.read_bytes()
        from PIL import Image

        with Image.open(BytesIO(data)) as opened:
            image = opened.convert("RGB")
    except Exception:  # not there, or not a picture PIL reads: embedded as it is, or missing
        return _data_uri(path)
    resized = image.width > THUMBNAIL_WIDTH
    if resized:
        height = max(1, round(image.height * THUMBNAIL_WIDTH / image.width))
        # Pillow sets Image.LANCZOS in a loop over Image.Resampling, which mypy cannot see
        image = image.resize((THUMBNAIL_WIDTH, height), Image.LANCZOS)  # type: ignore[attr-defined]
    buffer = BytesIO()
    image.save(buffer, format="JPEG", quality=THUMBNAIL_QUALITY, optimize=True)
    small = buffer.getvalue()
    if not resized and len(small) >= len(data):
        return _data_uri(path)
    return f"data:image/jpeg;base64,{base64.b64encode(small).decode('ascii')}"


def _data_uri(path: Path) -> Optional[str]:
    try:
        data = path.read_bytes()
    except OSError:
        return None
    mime = next((m for magic, m in IMAGE_TYPES.items() if data.startswith(magic)), None)
    mime = mime or mimetypes.guess_type(path.name)[0] or "application/octet-stream"
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


# ------------------------------------------------------------------ failures and fingerprints


def _failure_details(spec: str, records: List[dict]) -> str:
    failed = [r for r in records if _failed(r)]
    if not failed:
        return ""
    return "<h3>Failures</h3>" + "".join(_failure(spec, r) for r in failed)


def _failure(spec: str, record: dict) -> str:
    message = str(record.get("message") or "")
    extra = [str(f) for f in _list(record.get("failures")) if str(f) != message]
    parts = [f'<div class="failure" id="{_anchor("fail", spec, _item_label(record))}">'
             f'<h4>{_e(_item_name(record))} {_badge(_class_of(record))}</h4>']
    if record.get("nodeid"):
        parts.append(f'<p class="path">{_e(record["nodeid"])}</p>')
    if message:
        parts.append(f'<p class="message">{_e(message)}</p>')
    parts += _localisation(record)
    parts += _listing("failures", extra) + _listing("hints", [str(h) for h in _list(record.get("hints"))])
    parts += _listing("warnings", [str(w) for w in _list(record.get("warnings"))])
    parts += _worst_images(_dict(record.get("detection")))
    reduction = _dict(record.get("reduction"))
    if reduction.get("model"):
        parts.append(f'<p class="path">reduced model: {_e(reduction["model"])}</p>')
    if record.get("repro"):
        parts.append(f'<p class="path">repro bundle: {_e(record["repro"])}</p>')
    if record.get("log"):
        parts.append(f'<p class="path">log: {_e(record["log"])}</p>')
    if record.get("log_tail"):
        parts.append(f'<pre class="log">{_e(record["log_tail"])}</pre>')
    if record.get("traceback"):
        parts.append(f'<p class="label">traceback</p><pre class="log">{_e(record["traceback"])}</pre>')
    return "".join(parts) + "</div>"


WORST_IMAGES = 20


def _worst_images(detection: dict) -> List[str]:
    """A detector's images whose detection count differs from onnxruntime's, the worst first."""
    rows = [c for c in _list(detection.get("counts")) if isinstance(c, (list, tuple)) and len(c) >= 3
            and _finite(c[1]) is not None and _finite(c[2]) is not None and c[1] != c[2]]
    if not rows:
        return []
    rows.sort(key=lambda c: -abs(c[1] - c[2]))
    body = "".join(f"<tr><td>{_e(c[0])}</td><td class=\"num\">{c[1]:g}</td><td class=\"num\">{c[2]:g}</td>"
                   f"<td class=\"num\">{c[1] - c[2]:+g}</td></tr>" for c in rows[:WORST_IMAGES])
    more = f'<p class="muted">and {len(rows) - WORST_IMAGES} more</p>' if len(rows) > WORST_IMAGES else ""
    return [f'<p class="label">images whose detections differ, worst first</p><div class="scroll"><table>'
            f"<tr><th>image</th><th>RKNN</th><th>onnxruntime</th><th>difference</th></tr>{body}</table></div>{more}"]


def _localisation(record: dict) -> List[str]:
    """The toolkit's per-layer analysis of a failed item: the first layers below the threshold, and a
    chart of the single and entire cosine along the layers (diagnosis/localise.py)."""
    loc = _dict(record.get("localisation"))
    if not loc:
        return []
    title = f'<p class="label">where it diverges (accuracy_analysis, sample {_e(loc.get("sample"))} of ' \
            f'output {_e(loc.get("output"))})</p>'
    if loc.get("error"):
        return [f'<div class="localisation">{title}<p class="muted">the analysis did not finish: '
                f'{_e(loc["error"])}</p></div>']
    threshold = _number(loc.get("threshold"))
    lines = []
    for key, column, what in (("first_single", "single_cos", "alone (single)"),
                              ("first_entire", "entire_cos", "with the error of the layers before it (entire)")):
        row = _dict(loc.get(key))
        if row:
            fused = f", fused with {', '.join(map(str, _list(row.get('fused'))))}" if row.get("fused") else ""
            lines.append(f"<li>first layer below {_e(threshold)} {what}: <code>{_e(row.get('layer'))}</code> "
                         f"({_e(row.get('op'))}{_e(fused)}), cosine <span class=\"num\">"
                         f"{_cosine(row.get(column), threshold)}</span></li>")
        else:
            lines.append(f"<li>no layer below {_e(threshold)} {what}</li>")
    rows = [r for r in _list(loc.get("rows")) if isinstance(r, dict) and _number(r.get("single_cos")) is not None]
    path = f'<p class="path">{_e(loc["file"])}</p>' if loc.get("file") else ""
    return [f'<div class="localisation">{title}<ul>{"".join(lines)}</ul>{_layer_chart(rows, threshold, loc)}'
            f'{path}</div>']


def _layer_chart(rows: List[dict], threshold: Optional[float], loc: dict) -> str:
    """Single and entire cosine per layer, in execution order, as two polylines; a dashed threshold."""
    if not rows:
        return ""
    series = [("single", "single_cos", charts.PASSED_COLOUR), ("entire", "entire_cos", charts.REFERENCE_COLOUR)]
    values = [v for r in rows for _, key, _ in series if (v := _finite(r.get(key))) is not None]
    lo, hi, ticks, decimals = charts.y_axis(values + ([threshold] if threshold is not None else []))
    left, top, height, step = 56, 28, 160, max(8, min(28, 720 // max(len(rows), 1)))
    width = left + step * max(len(rows) - 1, 1) + 24

    def x(i: int) -> float:
        return left + i * step

    def y(v: float) -> float:
        return top + (hi - v) / ((hi - lo) or 1.0) * height

    full = top + height + 24
    parts = [f'<svg class="chart layers" xmlns="http://www.w3.org/2000/svg" width="{width}" height="{full}" '
             f'viewBox="0 0 {width} {full}" role="img"><title>cosine per layer</title>']
    for t in ticks:
        parts.append(f'<line x1="{left}" x2="{width - 12}" y1="{y(t):.1f}" y2="{y(t):.1f}" '
                     f'stroke="{charts.GRID_COLOUR}"/><text x="{left - 6}" y="{y(t) + 4:.1f}" text-anchor="end" '
                     f'font-size="11">{t:.{decimals}f}</text>')
    if threshold is not None:
        parts.append(f'<line x1="{left}" x2="{width - 12}" y1="{y(threshold):.1f}" y2="{y(threshold):.1f}" '
                     f'stroke="{charts.THRESHOLD_COLOUR}" stroke-dasharray="5 4"/>')
    for n, (name, key, colour) in enumerate(series):
        points = " ".join(f"{x(i):.1f},{y(v):.1f}" for i, r in enumerate(rows)
                          if (v := _finite(r.get(key))) is not None)
        parts.append(f'<polyline fill="none" stroke="{colour}" stroke-width="2" points="{points}"/>'
                     f'<text x="{left + n * 70}" y="14" font-size="12" fill="{colour}">— {name}</text>')
        for i, r in enumerate(rows):
            v = _finite(r.get(key))
            if v is not None:
                parts.append(f'<circle cx="{x(i):.1f}" cy="{y(v):.1f}" r="2.5" fill="{colour}"><title>'
                             f'{_e(r.get("layer"))} ({_e(r.get("op"))}): {name} cosine {v:.5f}</title></circle>')
    first = _dict(loc.get("first_single"))
    marked = next((i for i, r in enumerate(rows) if first and r.get("layer") == first.get("layer")), None)
    if marked is not None:
        v = _finite(rows[marked].get("single_cos"))
        parts.append(f'<circle cx="{x(marked):.1f}" cy="{y(v if v is not None else lo):.1f}" r="6" fill="none" '
                     f'stroke="{charts.FAILED_COLOUR}" stroke-width="2"/><text x="{x(marked):.1f}" '
                     f'y="{top + height + 18}" text-anchor="middle" font-size="11" fill="{charts.FAILED_COLOUR}">'
                     f'{_e(first.get("layer"))}</text>')
    return "".join(parts) + "</svg>"


def _listing(title: str, lines: List[str]) -> List[str]:
    if not lines:
        return []
    return [f'<p class="label">{_e(title)}</p><ul>{"".join(f"<li>{_e(line)}</li>" for line in lines)}</ul>']


def _fingerprints(records: List[dict]) -> str:
    """One column per item, so two versions' toolkit environments read side by side."""
    columns = [_fingerprint_rows(_dict(r.get("fingerprint"))) for r in records]
    keys: List[str] = []
    for column in columns:
        keys += [k for k in column if k not in keys]
    if not keys:
        return ""
    head = "".join(f"<th>{_e(_item_label(r))}</th>" for r in records)
    rows = []
    for key in keys:
        cells = [c.get(key, "") for c in columns]
        differs = ' class="differs"' if len(set(cells)) > 1 else ""
        rows.append(f"<tr{differs}><th>{_e(key)}</th>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    return (f'<details class="fingerprints"><summary>Fingerprints</summary><div class="scroll">'
            f'<table><tr><th></th>{head}</tr>{"".join(rows)}</table></div>'
            '<p class="muted">Rows that differ between items are highlighted.</p></details>')


def _fingerprint_rows(fingerprint: dict) -> Dict[str, str]:
    """Row name -> cell HTML."""
    rows = {}
    for key in ("toolkit_version", "target", "config_hash", "model_sha256", "rknn_sha256"):
        if fingerprint.get(key) is not None:
            value = fingerprint[key]
            rows[key.replace("_", " ")] = _hash(value) if key.endswith(("sha256", "hash")) else _e(value)
    for prefix in ("toolkit_env", "board"):
        for key, value in _dict(fingerprint.get(prefix)).items():
            if value not in (None, "", []):
                text = ", ".join(map(str, value)) if isinstance(value, list) else str(value)
                rows[f"{prefix.replace('_', ' ')} {key}"] = _e(text)
    return rows


def _hash(value) -> str:
    text = str(value)
    return f'<code title="{_e(text)}">{_e(text[:12])}…</code>' if len(text) > 16 else f"<code>{_e(text)}</code>"


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{title}</title>
<style>{css}</style>
</head>
<body>
{body}
</body>
</html>
"""

CSS = """
body { font: 14px/1.45 "DejaVu Sans", Arial, sans-serif; color: #222; margin: 0 auto; padding: 16px 24px 48px;
       max-width: 1280px; background: #fff; }
h1 { font-size: 24px; margin: 0 0 4px; }
h2 { font-size: 19px; margin: 0 0 2px; }
h3 { font-size: 15px; margin: 18px 0 6px; }
h4 { font-size: 14px; margin: 0 0 4px; }
header { border-bottom: 2px solid #ddd; padding-bottom: 10px; margin-bottom: 16px; }
header p { margin: 4px 0; }
.meta, .host, .path, .muted { color: #666; }
.path { font-size: 12px; margin: 0 0 8px; overflow-wrap: anywhere; }
section { margin: 0 0 22px; }
section.spec { border-top: 1px solid #ddd; padding-top: 14px; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: 4px 0 8px; }
th, td { border: 1px solid #ddd; padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: #f4f5f7; font-weight: 600; }
tr.failed td { background: #fdecea; }
tr.failed td:first-child { box-shadow: inset 4px 0 0 #d1412f; }
.num, code { font-family: "DejaVu Sans Mono", monospace; font-size: 13px; font-variant-numeric: tabular-nums; }
.pairs { display: grid; grid-template-columns: auto auto; gap: 0 10px; justify-content: start; align-items: baseline; }
.pairs .name, .slices .name { color: #555; }
.slices { display: grid; gap: 0 12px; justify-content: start; align-items: baseline; }
.nowrap { white-space: nowrap; }
.warn { color: #a65f00; }
tr.differs td { background: #fff6dd; }
.bad { color: #c0392b; font-weight: 600; }
.deltas { font-family: "DejaVu Sans Mono", monospace; font-size: 13px; white-space: nowrap; }
.badge { display: inline-block; color: #fff; border-radius: 3px; padding: 0 6px; font-size: 12px; font-weight: 600;
         line-height: 18px; white-space: nowrap; }
.overview th.spec { background: none; font-weight: normal; }
.notes { color: #8a5a00; margin: 4px 0 8px; }
.placement { margin: 4px 0 8px; padding-left: 22px; }
.placement li { margin: 2px 0; }
.op-target { margin: 2px 0 6px; }
figure.profile { margin: 8px 0; }
figure.profile figcaption { font-size: 12px; color: #666; max-width: 900px; }
.charts { display: flex; flex-wrap: wrap; gap: 12px 28px; align-items: flex-start; margin: 8px 0; }
svg.chart { max-width: 100%; height: auto; }
details { margin: 6px 0; }
summary { cursor: pointer; color: #2c5d9e; }
.gallery { display: flex; flex-wrap: wrap; gap: 12px; margin-top: 6px; }
figure { margin: 0; }
figure img { display: block; max-width: 100%; border: 1px solid #ccc; }
figcaption { font-size: 12px; color: #666; }
figure.missing p { color: #c0392b; border: 1px dashed #c0392b; padding: 12px; margin: 0; }
.failure { border-left: 4px solid #d1412f; background: #fdf6f5; padding: 8px 12px; margin: 8px 0; }
.failure ul { margin: 2px 0 6px; padding-left: 22px; }
.message { font-weight: 600; margin: 4px 0; overflow-wrap: anywhere; }
.label { margin: 6px 0 0; color: #666; font-size: 12px; text-transform: uppercase; }
pre.log { background: #1e1e1e; color: #e6e6e6; padding: 8px 10px; font-size: 12px; max-height: 360px;
          overflow: auto; white-space: pre-wrap; overflow-wrap: anywhere; margin: 6px 0 0; }
"""
