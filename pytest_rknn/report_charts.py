"""Inline SVG bar charts for the HTML report: pure functions from numbers to SVG text.

A chart is a row of groups (one per version-backend) of bars (one per output). The y axis is
zoomed to the data, because the interesting cosines all lie between 0.99 and 1.0; dashed lines
mark each bar's threshold and each group's reference value. A quantity chart (cycles, bytes, a
count) is a small one whose y axis starts at 0, with each bar's value written above it.
Bars, lines, ticks and the legend carry classes (bar, threshold, reference, tick, baseline, legend) and
their values (data-value, data-threshold), so a script or a test can read a chart from the rendered page."""

from __future__ import annotations

import math
from dataclasses import dataclass
from html import escape
from typing import Iterable, List, Optional, Sequence, Tuple

PASSED_COLOUR = "#3b6fb6"
FAILED_COLOUR = "#d1412f"
THRESHOLD_COLOUR = "#b35c00"
REFERENCE_COLOUR = "#1f8a4c"
AXIS_COLOUR = "#555"
GRID_COLOUR = "#e3e3e3"
TEXT_COLOUR = "#222"

FONT = 12
CHAR_WIDTH = 0.62 * FONT  # an average glyph of DejaVu Sans / Arial, to size labels without measuring
BOLD = 1.12  # bold glyphs are that much wider
BAR = 30
BAR_GAP = 6
GROUP_GAP = 26
PLOT_HEIGHT = 200
TOP = 60  # title and legend
LEGEND_HEIGHT = 24
MAX_LABEL_CHARS = 16
MAX_CELL = 84  # wider bar labels are written slanted


@dataclass(frozen=True)
class Bar:
    label: str
    value: Optional[float]  # None or NaN: no bar, "n/a" written in its place
    failed: bool = False
    threshold: Optional[float] = None
    tooltip: str = ""
    text: str = ""  # written above the bar
    whisker: Optional[float] = None  # a line up from the bar's top to this value (a p90 over a median)


@dataclass(frozen=True)
class Group:
    label: str
    bars: Tuple[Bar, ...]
    failed: bool = False
    reference: Optional[float] = None  # a value the bars are judged against (onnxruntime's mAP)
    empty_note: str = "no data"  # written in place of bars when there are none


@dataclass(frozen=True)
class Units:
    """How a quantity is written: 2.3k cycles, 17 KB. `integer`: no ticks between whole numbers."""

    base: int
    names: Tuple[str, ...]
    integer: bool = False

    def scale(self, value: float) -> Tuple[float, str]:
        power = 0
        while power + 1 < len(self.names) and abs(value) >= self.base ** (power + 1):
            power += 1
        return float(self.base ** power), self.names[power]

    def text(self, value: float) -> str:
        scale, name = self.scale(value)
        scaled = value / scale
        digits = f"{scaled:.1f}".removesuffix(".0") if abs(scaled) < 10 else f"{scaled:.0f}"
        return digits + name


CYCLES = Units(1000, ("", "k", "M", "G"))
BYTES = Units(1024, (" B", " KB", " MB", " GB"))
COUNT = Units(1000, ("", "k", "M"), integer=True)
MILLISECONDS = Units(1000, (" ms", " s"))
FRACTION = Units(1000, ("",))  # an mAP: 0 to 1


@dataclass(frozen=True)
class _Layout:
    """Horizontal geometry. Every bar has a cell, and the cells tile the plot (the outer cells of a
    group take half the gap), so equal threshold segments of neighbouring bars join into one line."""

    rotate_labels: bool
    group_spans: List[Tuple[float, float]]
    bar_x: List[List[float]]  # left edges
    cells: List[List[Tuple[float, float]]]
    width: float


def bar_chart(title: str, groups: Sequence[Group], *, y_max: float = 1.0, threshold_name: str = "min",
              reference_name: str = "onnxruntime", value_decimals: Optional[int] = None,
              units: Optional[Units] = None, legend: bool = True, plot_height: float = PLOT_HEIGHT) -> str:
    """A grouped bar chart as one <svg> element, sized in pixels (CSS scales it down when narrow).
    `value_decimals`: write each bar's value above it with that many decimals (a bar's `text` wins).
    `units`: the y axis starts at 0 and its ticks are written in these units, instead of zoomed."""
    lo, hi, ticks, tick_labels = _ticks(_finite(_plotted_values(groups)), y_max, units)
    if units is None and lo > 0:  # said, so a short bar is not read as a small value
        title = f"{title} · y axis zoomed, from {tick_labels[0]}"
    left = 14 + _text_width(max(tick_labels, key=len))
    names = (threshold_name, reference_name)
    line_labels = _line_labels(groups, *names)
    right = 12 + max((_text_width(text) for _, text, _ in line_labels), default=0)
    rotate, cell = _cells(groups)
    if rotate:  # room for the first bar's slanted label, which reaches left of its bar
        longest = max(_text_width(_short(b.label)) for g in groups for b in g.bars)
        left = max(left, longest * math.cos(math.radians(40)) - GROUP_GAP / 2 - BAR / 2 + 8)
    layout = _layout(groups, left, rotate, cell)
    label_depth = _bar_label_depth(groups, layout.rotate_labels)
    top = TOP if legend else TOP - LEGEND_HEIGHT
    bottom = top + plot_height
    height = bottom + label_depth + FONT + 14
    width = max(layout.width + right, BOLD * _text_width(title, FONT + 2) + 16,
                _legend_width(groups, line_labels, names) if legend else 0)

    def y(value: float) -> float:
        return bottom - (min(max(value, lo), hi) - lo) / (hi - lo) * plot_height

    parts = [_header(title, groups, line_labels, names, legend),
             _y_axis(ticks, tick_labels, y, left, layout.width, top),
             _bars(groups, layout, y, bottom, value_decimals),
             _lines(groups, layout, y),
             _line_label_texts(line_labels, y, layout.width + 6),
             _x_labels(groups, layout, bottom, label_depth)]
    return (f'<svg class="chart" width="{width:.0f}" height="{height:.0f}" '
            f'viewBox="0 0 {width:.0f} {height:.0f}" role="img" aria-label="{escape(title)}" '
            f'font-family="DejaVu Sans, Arial, sans-serif" font-size="{FONT}">'
            + "".join(parts) + "</svg>")


def quantity_chart(title: str, groups: Sequence[Group], units: Units) -> str:
    """A small chart of one quantity (cycles, bytes, a count), a bar per group, from 0, no legend."""
    return bar_chart(title, groups, units=units, legend=False, plot_height=PLOT_HEIGHT * 0.6, y_max=0.0)


def _ticks(values: List[float], y_max: float, units: Optional[Units]) -> Tuple[float, float, List[float], List[str]]:
    if units is not None:
        ticks, labels = zero_axis(values + [y_max], units)
        return 0.0, ticks[-1], ticks, labels
    lo, hi, ticks, decimals = y_axis(values, y_max)
    return lo, hi, ticks, [f"{t:.{decimals}f}" for t in ticks]


def y_axis(values: List[float], y_max: float = 1.0) -> Tuple[float, float, List[float], int]:
    """(bottom, top, ticks, decimals): from a nice number a bit below the lowest value to y_max."""
    top = max([y_max] + values)
    lowest = min(values, default=top - 1e-3)
    span = max(top - lowest, 1e-6 * max(abs(top), 1.0))
    step = _nice_step((span * 1.2) / 5)
    bottom = math.floor((lowest - 0.15 * span) / step) * step
    top = math.ceil(top / step - 1e-9) * step
    decimals = max(0, -math.floor(math.log10(step) + 1e-9))
    count = int(round((top - bottom) / step))
    ticks = [round(bottom + k * step, decimals + 3) for k in range(count + 1)]
    return bottom, top, ticks, decimals


def zero_axis(values: List[float], units: Units) -> Tuple[List[float], List[str]]:
    """(ticks, labels) from 0 to a nice number at or above the largest value, in the unit that suits it."""
    highest = max(values + [0.0])
    scale, name = units.scale(highest)
    step = _nice_step(highest / scale / 4) if highest > 0 else 1.0
    if units.integer:
        step = max(step, 1.0)
    count = max(1, math.ceil(highest / scale / step - 1e-9))
    ticks = [k * step * scale for k in range(count + 1)]
    return ticks, ["0"] + [f"{round(k * step, 6):g}{name}" for k in range(1, count + 1)]


def _nice_step(raw: float) -> float:
    magnitude = 10 ** math.floor(math.log10(raw))
    return next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= raw)


def _plotted_values(groups: Iterable[Group]) -> List[Optional[float]]:
    values = []
    for group in groups:
        values.append(group.reference)
        for bar in group.bars:
            values += [bar.value, bar.threshold, bar.whisker]
    return values


def _finite(values: Iterable[Optional[float]]) -> List[float]:
    return [v for v in values if v is not None and math.isfinite(v)]


def _text_width(text: str, size: float = FONT) -> float:
    return len(text) * CHAR_WIDTH * size / FONT


def _short(label: str) -> str:
    return label if len(label) <= MAX_LABEL_CHARS else label[:MAX_LABEL_CHARS - 1] + "…"


def _cells(groups: Sequence[Group]) -> Tuple[bool, float]:
    """Whether bar labels are slanted, and the width of a bar's cell: wide enough for its label and
    the text above it."""
    longest = max((_text_width(_short(b.label)) for g in groups for b in g.bars), default=0)
    text = max((_text_width(b.text) for g in groups for b in g.bars), default=0)
    rotate = longest + 8 > MAX_CELL
    return rotate, max(BAR + BAR_GAP, text + 8, 0 if rotate else longest + 8)


def _layout(groups: Sequence[Group], left: float, rotate: bool, cell: float) -> _Layout:
    x = left + GROUP_GAP / 2
    group_spans, bar_x, cells = [], [], []
    for group in groups:
        width = max(cell * max(len(group.bars), 1), BOLD * _text_width(group.label) + 10)
        group_spans.append((x, x + width))
        first = x + (width - cell * len(group.bars)) / 2
        edges = [first + i * cell for i in range(len(group.bars) + 1)]
        bar_x.append([edge + (cell - BAR) / 2 for edge in edges[:-1]])
        if group.bars:
            edges[0], edges[-1] = x - GROUP_GAP / 2, x + width + GROUP_GAP / 2
        cells.append(list(zip(edges, edges[1:])))
        x += width + GROUP_GAP
    return _Layout(rotate, group_spans, bar_x, cells, max(x - GROUP_GAP / 2, left + 120))


def _bar_label_depth(groups: Sequence[Group], rotated: bool) -> float:
    """Height under the plot taken by the bar labels."""
    labels = [_short(b.label) for g in groups for b in g.bars if b.label]
    if not labels:
        return 0
    if not rotated:
        return FONT + 8
    return 12 + max(_text_width(label) for label in labels) * math.sin(math.radians(40)) + FONT


def _legend(groups: Sequence[Group], line_labels, names: Tuple[str, str]) -> List[Tuple[str, str, str]]:
    """(colour, text, "box" or "line") for what the chart shows."""
    items = []
    if any(not (g.failed or b.failed) for g in groups for b in g.bars):
        items.append((PASSED_COLOUR, "passed", "box"))
    if any(g.failed or any(b.failed for b in g.bars) for g in groups):
        items.append((FAILED_COLOUR, "failed", "box"))
    kinds = {kind for _, _, kind in line_labels}
    if "threshold" in kinds:
        items.append((THRESHOLD_COLOUR, names[0], "line"))
    if "reference" in kinds:
        items.append((REFERENCE_COLOUR, names[1], "line"))
    return items


def _legend_width(groups: Sequence[Group], line_labels, names: Tuple[str, str]) -> float:
    return 8 + sum(36 + _text_width(text) for _, text, _ in _legend(groups, line_labels, names))


def _header(title: str, groups: Sequence[Group], line_labels, names: Tuple[str, str], legend: bool = True) -> str:
    parts = [f'<text x="8" y="18" font-size="{FONT + 2}" font-weight="bold" fill="{TEXT_COLOUR}">'
             f'{escape(title)}</text>']
    if not legend:
        return parts[0]
    x = 8.0
    parts.append('<g class="legend">')
    for colour, text, kind in _legend(groups, line_labels, names):
        if kind == "box":
            parts.append(f'<rect x="{x:.1f}" y="28" width="12" height="12" fill="{colour}"/>')
        else:
            parts.append(f'<line x1="{x:.1f}" y1="34" x2="{x + 16:.1f}" y2="34" stroke="{colour}" '
                         f'stroke-width="2" stroke-dasharray="5 3"/>')
        parts.append(f'<text x="{x + 20:.1f}" y="38.5" fill="{TEXT_COLOUR}">{escape(text)}</text>')
        x += 36 + _text_width(text)
    parts.append("</g>")
    return "".join(parts)


def _y_axis(ticks: List[float], labels: List[str], y, left: float, right: float, top: float = TOP) -> str:
    parts = []
    for tick, label in zip(ticks, labels):
        parts.append(f'<line class="tick" data-value="{float(tick)!r}" x1="{left:.1f}" y1="{y(tick):.1f}" '
                     f'x2="{right:.1f}" y2="{y(tick):.1f}" stroke="{GRID_COLOUR}"/>')
        parts.append(f'<text x="{left - 6:.1f}" y="{y(tick) + 4:.1f}" text-anchor="end" fill="{AXIS_COLOUR}">'
                     f'{label}</text>')
    bottom = y(ticks[0])
    parts.append(f'<line x1="{left:.1f}" y1="{top - 4}" x2="{left:.1f}" y2="{bottom:.1f}" stroke="{AXIS_COLOUR}"/>')
    parts.append(f'<line class="baseline" x1="{left:.1f}" y1="{bottom:.1f}" x2="{right:.1f}" y2="{bottom:.1f}" '
                 f'stroke="{AXIS_COLOUR}"/>')
    return "".join(parts)


def _bars(groups: Sequence[Group], layout: _Layout, y, bottom: float, value_decimals: Optional[int]) -> str:
    parts = []
    for group, xs, (g0, g1) in zip(groups, layout.bar_x, layout.group_spans):
        if not group.bars:
            parts.append(_centred_note(group.empty_note, (g0 + g1) / 2, bottom - 8, FAILED_COLOUR))
        for bar, x in zip(group.bars, xs):
            tooltip = f"<title>{escape(bar.tooltip or bar.label)}</title>"
            if bar.value is None or not math.isfinite(bar.value):
                parts.append(_centred_note("n/a", x + BAR / 2, bottom - 8, FAILED_COLOUR, tooltip))
                continue
            top = y(bar.value)
            colour = FAILED_COLOUR if bar.failed else PASSED_COLOUR  # the bar's own metric against its own line
            parts.append(f'<rect class="bar"{_data(bar, bar.value)} x="{x:.1f}" y="{top:.1f}" width="{BAR}" '
                         f'height="{max(bottom - top, 0):.1f}" fill="{colour}">{tooltip}</rect>')
            if bar.whisker is not None and math.isfinite(bar.whisker) and bar.whisker > bar.value:
                top = y(bar.whisker)
                parts.append(_whisker(x + BAR / 2, top, y(bar.value)))
            text = bar.text or (f"{bar.value:.{value_decimals}f}" if value_decimals is not None else "")
            if text:
                # a failed value in red: a failed 0.0 has no bar to be red
                parts.append(_centred_note(text, x + BAR / 2, top - 5, FAILED_COLOUR if bar.failed else TEXT_COLOUR,
                                           halo=True))
    return "".join(parts)


def _whisker(x: float, top: float, bottom: float) -> str:
    return (f'<path d="M{x:.1f} {bottom:.1f}V{top:.1f}M{x - 6:.1f} {top:.1f}H{x + 6:.1f}" stroke="{TEXT_COLOUR}" '
            f'stroke-width="1.5" fill="none"/>')


def _centred_note(text: str, x: float, y: float, colour: str, inner: str = "", halo: bool = False) -> str:
    # A white outline under the glyphs keeps a value legible where a dashed line crosses it.
    outline = ' stroke="#fff" stroke-width="3" paint-order="stroke"' if halo else ""
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="middle" fill="{colour}"{outline}>'
            f'{escape(text)}{inner}</text>')


def _lines(groups: Sequence[Group], layout: _Layout, y) -> str:
    parts = []
    for group, cells, (g0, g1) in zip(groups, layout.cells, layout.group_spans):
        for bar, (c0, c1) in zip(group.bars, cells):
            if bar.threshold is not None and math.isfinite(bar.threshold):
                parts.append(_dashed(c0, c1, y(bar.threshold), THRESHOLD_COLOUR, "threshold", bar.threshold))
        if group.reference is not None and math.isfinite(group.reference):
            parts.append(_dashed(g0 - GROUP_GAP / 2, g1 + GROUP_GAP / 2, y(group.reference), REFERENCE_COLOUR,
                                 "reference", group.reference))
    return "".join(parts)


def _dashed(x0: float, x1: float, y: float, colour: str, kind: str, value: float) -> str:
    return (f'<line class="{kind}" data-value="{float(value)!r}" x1="{x0:.1f}" y1="{y:.1f}" x2="{x1:.1f}" y2="{y:.1f}" '
            f'stroke="{colour}" stroke-width="2" stroke-dasharray="6 4"/>')


def _data(bar: Bar, value: float) -> str:
    """The bar's value, its line and whether it failed, as attributes: for scripts and tests reading the page."""
    found = f' data-value="{float(value)!r}"'
    if bar.threshold is not None and math.isfinite(bar.threshold):
        found += f' data-threshold="{float(bar.threshold)!r}"'
    return found + (' data-failed="true"' if bar.failed else "")


def _line_labels(groups: Sequence[Group], threshold_name: str,
                 reference_name: str) -> List[Tuple[float, str, str]]:
    """(value, text, kind) for every distinct threshold and reference value, written right of the plot."""
    labels = {}
    for group in groups:
        for bar in group.bars:
            if bar.threshold is not None and math.isfinite(bar.threshold):
                labels[(bar.threshold, "threshold")] = f"{threshold_name} {_trimmed(bar.threshold)}"
        if group.reference is not None and math.isfinite(group.reference):
            labels[(group.reference, "reference")] = f"{reference_name} {group.reference:.3f}"
    return [(value, text, kind) for (value, kind), text in sorted(labels.items())]


def _trimmed(value: float) -> str:
    """A threshold as the spec wrote it: 0.97, 0.99999999."""
    return f"{value:.12g}"


def _line_label_texts(labels: List[Tuple[float, str, str]], y, x: float) -> str:
    """The labels at their line's height, pushed apart where they would overlap."""
    parts, previous = [], None
    for value, text, kind in sorted(labels, key=lambda label: -y(label[0])):
        at = y(value) + 4
        if previous is not None and at > previous - FONT - 1:
            at = previous - FONT - 1
        previous = at
        colour = THRESHOLD_COLOUR if kind == "threshold" else REFERENCE_COLOUR
        parts.append(f'<text x="{x:.1f}" y="{at:.1f}" fill="{colour}">{escape(text)}</text>')
    return "".join(parts)


def _x_labels(groups: Sequence[Group], layout: _Layout, bottom: float, label_depth: float) -> str:
    parts = []
    for group, xs, (g0, g1) in zip(groups, layout.bar_x, layout.group_spans):
        for bar, x in zip(group.bars, xs):
            centre = x + BAR / 2
            if bar.label:
                parts.append(_bar_label(_short(bar.label), bar.label, centre, bottom, layout.rotate_labels))
        colour = FAILED_COLOUR if group.failed else TEXT_COLOUR
        parts.append(f'<text x="{(g0 + g1) / 2:.1f}" y="{bottom + label_depth + FONT + 4:.1f}" text-anchor="middle" '
                     f'font-weight="bold" fill="{colour}">{escape(group.label)}</text>')
    return "".join(parts)


def _bar_label(text: str, full: str, x: float, bottom: float, rotated: bool) -> str:
    title = f"<title>{escape(full)}</title>" if text != full else ""
    if not rotated:
        return (f'<text x="{x:.1f}" y="{bottom + FONT + 4:.1f}" text-anchor="middle" fill="{AXIS_COLOUR}">'
                f'{escape(text)}{title}</text>')
    y = bottom + 12
    return (f'<text x="{x:.1f}" y="{y:.1f}" text-anchor="end" fill="{AXIS_COLOUR}" '
            f'transform="rotate(-40 {x:.1f} {y:.1f})">{escape(text)}{title}</text>')
