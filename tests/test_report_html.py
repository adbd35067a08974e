"""The HTML report: a self-contained page, escaped, with charts and embedded overlays; and a real
browser renders it."""

import base64
import io
import re
from html.parser import HTMLParser

import numpy as np
import pytest
from PIL import Image

from conftest import FIXTURES, render_in_chromium
from pytest_rknn import report_charts, report_html
from pytest_rknn.report_assets import with_copied_assets
from pytest_rknn.report_html import write_html_report

WINDOW = (1280, 2400)
OVERLAY_COLOUR = (23, 201, 140)  # a colour nothing else on the page uses
HOSTILE = "cosine 0.5 < min 0.99 & \"quoted\" 'single'"
LOG_TAIL = "E rknn.build: <script>alert('x')</script> & the rest\nTraceback: a < b"


def fingerprint(version, board=None):
    found = {"host": {"python": "3.11.7"}, "config_hash": "c0ffee12", "target": "rk3588",
             "model_sha256": "ab" * 32, "rknn_sha256": "cd" * 32, "toolkit_version": version,
             "toolkit_env": {"python": "3.11.7", "onnx": "1.18.0", "torch": "2.13.0+cpu", "numpy": "1.26.4"}}
    if board:
        found["board"] = board
    return found


def record(spec, version, backend="sim", **fields):
    found = {"spec": spec, "spec_file": f"/specs/{spec}.rknn.yaml", "version": version, "backend": backend,
             "outcome": "passed", "class": None, "message": "", "failures": [], "warnings": [], "metrics": {},
             "outputs": [], "detection": None, "thresholds": {}, "comparisons": [],
             "fingerprint": fingerprint(version), "timings": {"build": 1.25, "inference": 0.5},
             "log": f"/runs/{spec}/{version}/log.txt", "log_tail": None,
             "nodeid": f"specs/{spec}.rknn.yaml::{spec}[{version}-{backend}]"}
    found.update(fields)
    return found


def output(name, worst, vs_sim=None):
    return {"name": name, "worst_cosine": worst, "cosines": [worst], "max_abs": 0.01, "shape_ok": True,
            "missing": 0, "nonfinite": 0, "vs_sim_cosine": vs_sim}


def cnn_records():
    thresholds = {"cosine.logits": 0.999, "cosine.features": 0.999}
    passed = record("cnn", "2.5.0", thresholds=thresholds,
                    metrics={"cosine.logits": 0.99999996, "cosine.features": 0.9995, "max_abs.logits": 0.003},
                    outputs=[output("logits", 0.99999996), output("features", 0.9995)],
                    comparisons=[{"against": "baseline", "source": "baselines/cnn.json", "deltas": {
                        "cosine.logits": {"value": 0.99999996, "reference": 0.99999996, "delta": 0.0,
                                          "allowed": 0.001, "failed": False}}}])
    board = record("cnn", "2.5.0", "board", thresholds=thresholds,
                   metrics={"cosine.logits": 0.9999, "vs_sim_cosine.logits": 0.99995},
                   outputs=[output("logits", 0.9999, vs_sim=0.99995)],
                   warnings=["board librknnrt 2.3.0 is older than the toolkit 2.5.0"],
                   fingerprint=fingerprint("2.5.0", {"address": "10.0.0.7:22", "soc": "rk3588",
                                                     "librknnrt": "2.3.0 (c949ad889d)", "compatible": ["a", "b"]}))
    failed = record("cnn", "2.3.2", thresholds=thresholds, outcome="failed", **{"class": "ACCURACY"},
                    message=HOSTILE, failures=[HOSTILE, "baseline baselines/cnn.json: cosine.features worse"],
                    metrics={"cosine.logits": 0.5, "cosine.features": "nan"},
                    outputs=[output("logits", 0.5), output("features", "nan")],
                    comparisons=[{"against": "baseline", "source": "baselines/cnn.json", "deltas": {
                        "cosine.logits": {"value": 0.5, "reference": 0.9999, "delta": -0.4999, "allowed": 0.001,
                                          "failed": True}}}])
    return [passed, board, failed]


def broken_record():
    return record("broken", "2.5.0", outcome="failed", **{"class": "BUILD"}, message="rknn.build returned -1 <oops>",
                  failures=["rknn.build returned -1 <oops>"], log_tail=LOG_TAIL, timings={},
                  comparisons=[{"against": "2.3.2", "source": "this run", "missing": "its result has no metrics"}])


def detector_records(tmp_path):
    overlay = tmp_path / "overlay.png"
    Image.new("RGB", (240, 120), OVERLAY_COLOUR).save(overlay)
    detection = {"layout": "heads", "map50": 0.92, "ref_map50": 0.918, "map": 0.75, "ref_map": 0.76,
                 "agreement_map50": 0.97, "counts": [["a.jpg", 4, 4], ["b.jpg", 3, 5]],
                 "slice_cosines": {"output0": {"boxes": 0.998, "objectness": "nan", "classes": 0.99}},
                 "overlays": [str(overlay)]}
    thresholds = {"cosine.output0": 0.97}
    passed = record("yolo", "2.5.0", thresholds=thresholds, detection=detection,
                    metrics={"cosine.output0": 0.995, "map50": 0.92}, outputs=[output("output0", 0.995)])
    failed = record("yolo", "2.3.2", thresholds=thresholds, outcome="failed", **{"class": "ACCURACY"},
                    message="mAP@0.5 0.60 < 0.95 x onnxruntime's", failures=["mAP@0.5 0.60 < 0.95 x onnxruntime's"],
                    detection=dict(detection, map50=0.6, overlays=[str(overlay), str(tmp_path / "gone.png")]),
                    metrics={"cosine.output0": 0.99, "map50": 0.6}, outputs=[output("output0", 0.99)])
    return [passed, failed], overlay


def document(items):
    return {"format": "pytest-rknn-report/1", "created": "2026-11-22T05:57:02+00:00",
            "host": {"python": "3.11.7", "onnxruntime": "1.31.1"}, "compare_to": "2.3.2",
            "baseline": "/work/baselines", "items": items}


@pytest.fixture
def written(tmp_path):
    detector, overlay = detector_records(tmp_path)
    path = tmp_path / "out" / "report.html"
    write_html_report(path, document(cnn_records() + [broken_record()] + detector))
    return path, path.read_text(encoding="utf-8"), overlay


class Rows(HTMLParser):
    """(class attribute, text) of every row of the results tables."""

    def __init__(self):
        super().__init__()
        self.rows, self.in_results, self.current = [], False, None

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "table":
            self.in_results = attrs.get("class") == "results"
        elif tag == "tr" and self.in_results:
            self.current = [attrs.get("class") or "", ""]
            self.rows.append(self.current)

    def handle_data(self, data):
        if self.current is not None:
            self.current[1] += data + " "

    def handle_endtag(self, tag):
        if tag in ("tr", "table"):
            self.current = None


def results_rows(text):
    parser = Rows()
    parser.feed(text)
    return [(cls, " ".join(body.split())) for cls, body in parser.rows if not body.startswith("version")]


def spec_sections(text):
    return dict(re.findall(r'<section class="spec" id="spec-([^"]+)">(.*?)</section>', text, re.S))


def test_written_atomically(written):
    path, text, _ = written
    assert text.startswith("<!doctype html>")
    assert [p.name for p in path.parent.iterdir()] == ["report.html"]


def test_text_from_the_document_is_escaped(written):
    _, text, _ = written
    assert "<script" not in text.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; the rest" in text
    assert "cosine 0.5 &lt; min 0.99 &amp; &quot;quoted&quot; &#x27;single&#x27;" in text
    assert "rknn.build returned -1 &lt;oops&gt;" in text


def test_a_section_and_chart_per_spec_in_name_order(written):
    _, text, _ = written
    sections = spec_sections(text)
    assert list(sections) == ["broken", "cnn", "yolo"]
    assert "<svg" in sections["cnn"] and "<svg" not in sections["broken"]  # no chart without any outputs
    assert sections["yolo"].count("<svg") == 2  # cosine and mAP@0.5
    assert "mAP@0.5 against the labels" in sections["yolo"] and "onnxruntime 0.918" in sections["yolo"]
    assert "min 0.999" in sections["cnn"]  # the threshold line's label


def test_failed_rows_are_marked(written):
    _, text, _ = written
    rows = results_rows(text)
    assert len(rows) == 6
    for cls, body in rows:
        assert (cls == "failed") == ("failed" in body), body
    assert sum(cls == "failed" for cls, _ in rows) == 3


def test_cells_floor_cosines_and_show_nan_deltas_and_missing_comparisons(written):
    _, text, _ = written
    cnn = spec_sections(text)["cnn"]
    rows = {" ".join(body.split()[:2]): body for _, body in results_rows(cnn)}
    assert "logits 0.999999" in rows["2.5.0 sim"]  # floored, never rounded up to 1.000000
    assert "features nan" in rows["2.3.2 sim"]
    assert "cos -0.5!" in rows["2.3.2 sim"] and "cos =" in rows["2.5.0 sim"]
    assert "board vs sim" in cnn and "logits 0.999950" in rows["2.5.0 board"]
    broken = results_rows(spec_sections(text)["broken"])[0][1]
    assert "n/a" in broken and "BUILD" in broken
    assert "board librknnrt 2.3.0 is older" in cnn  # a passed item's warning


def test_overlays_are_embedded_and_open_for_failed_items(written):
    _, text, overlay = written
    embedded = re.findall(r'src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert len(embedded) == 2
    assert all(base64.b64decode(data) == overlay.read_bytes() for data in embedded)
    assert "image not found: " in text and "gone.png" in text
    assert len(re.findall(r'<details class="overlays" open>', text)) == 1
    assert len(re.findall(r'<details class="overlays">', text)) == 1


def test_nothing_is_loaded_from_elsewhere(written):
    _, text, _ = written
    for reference in ("http://", "https://", 'src="/', "src='/", 'href="/', "url(", "<script", "<link"):
        assert reference not in text
    assert not re.search(r'(src|href)="(?!data:|#)', text)


def test_failure_details_and_fingerprints(written):
    _, text, _ = written
    broken = spec_sections(text)["broken"]
    assert '<pre class="log">' in broken and "/runs/broken/2.5.0/log.txt" in broken
    cnn = spec_sections(text)["cnn"]
    assert "baseline baselines/cnn.json: cosine.features worse" in cnn
    assert f'title="{"ab" * 32}"' in cnn and "abababababab…" in cnn
    assert "10.0.0.7:22" in cnn and "2.13.0+cpu" in cnn


def test_a_sparse_document_still_renders(tmp_path):
    path = tmp_path / "report.html"
    write_html_report(path, {"items": [{"spec": "odd", "outcome": "failed", "metrics": None, "detection": {},
                                        "comparisons": [{"against": "baseline"}], "timings": {"x": "nan"}}]})
    assert "odd" in path.read_text()
    write_html_report(path, {})
    assert "<b>0</b> items" in path.read_text()


def test_y_axis_is_zoomed_to_values_and_thresholds():
    bottom, top, ticks, decimals = report_charts.y_axis([0.9953, 0.97, 0.9802])
    assert 0.95 <= bottom < 0.97 and top == 1.0
    assert ticks[0] == bottom and ticks[-1] == pytest.approx(1.0)
    assert decimals == 2


def test_chart_labels_are_escaped_and_nan_is_not_a_bar():
    svg = report_charts.bar_chart("a <b>", [report_charts.Group("2.5.0 <sim>", (
        report_charts.Bar("out&1", float("nan"), threshold=0.99), report_charts.Bar("out2", 0.995)))])
    assert svg.startswith("<svg") and "<b>" not in svg and "&lt;sim&gt;" in svg and "out&amp;1" in svg
    assert svg.count("<rect") == 2  # the legend's swatch and the one finite bar
    assert "n/a" in svg


def test_a_browser_renders_the_page(tmp_path):
    detector, _ = detector_records(tmp_path)
    page = tmp_path / "report.html"
    write_html_report(page, document(detector + [broken_record()]))
    screenshot = render_in_chromium(page, tmp_path, WINDOW)

    image = Image.open(screenshot).convert("RGB")
    assert image.size == WINDOW
    colours = {colour: count for count, colour in image.getcolors(WINDOW[0] * WINDOW[1])}
    assert len(colours) > 50
    non_white = sum(count for colour, count in colours.items() if colour != (255, 255, 255))
    assert non_white / (WINDOW[0] * WINDOW[1]) > 0.1
    assert colours.get(_rgb(report_charts.PASSED_COLOUR), 0) > 1000  # bars of the passed item
    assert colours.get(_rgb(report_charts.FAILED_COLOUR), 0) > 1000  # and of the failed one
    assert colours.get(OVERLAY_COLOUR, 0) > 0.5 * 240 * 120  # the overlay of the failed item, shown open


def _rgb(hex_colour):
    return tuple(int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))


# ------------------------------------------------------------------ profiles and latency

CPU_REASON = "Op type 'GridSample' <not supported> on the NPU & falls back to the CPU"


def profile(cycles, internal, weight, rknn_bytes, npu_ops, cpu_layers=()):
    return {"npu_ops": npu_ops, "cpu_ops": len(cpu_layers), "cycles": cycles, "internal_memory": internal,
            "weight_memory": weight, "rknn_bytes": rknn_bytes, "build_seconds": 3.5, "cpu_layers": list(cpu_layers)}


def cpu_layer(node, tensor, reason=CPU_REASON, op_type="GridSample"):
    return {"op_type": op_type, "node": node, "onnx_op_type": op_type, "tensor": tensor, "reason": reason}


def profiled_records():
    """warp at 2.3.2 puts a GridSample on the CPU; at 2.5.0 all on the NPU; the board measured latency."""
    old = record("warp", "2.3.2", outcome="failed", **{"class": "PLACEMENT"}, message="1 layer on the CPU",
                 profile=profile(2345, 12 * 1024, 5 * 1024, 1536 * 1024, 40,
                                 [cpu_layer("/grid/GridSample", "/grid/GridSample_output_0")]))
    new = record("warp", "2.5.0", profile=profile(1800, 10 * 1024, 5 * 1024, 1480 * 1024, 41))
    board = record("warp", "2.5.0", "board", profile=None,
                   latency={"median_ms": 12.34, "p90_ms": 15.67, "runs": 50, "warmup": 5, "core_mask": "NPU_CORE_0"})
    return [old, new, board]


def test_where_it_runs_names_each_cpu_layer_with_reason_and_op_target():
    text = report_html.render(document(profiled_records()))
    warp = spec_sections(text)["warp"]
    assert "<h3>Where it runs</h3>" in warp
    assert "<b>2.3.2</b>: 40 layers on the NPU" in warp and "1 layer on the CPU" in warp
    assert "<code>/grid/GridSample</code>" in warp
    assert "Op type &#x27;GridSample&#x27; &lt;not supported&gt; on the NPU &amp; falls back to the CPU" in warp
    assert "<code>op_target: {&#x27;/grid/GridSample_output_0&#x27;: &#x27;npu&#x27;}</code>" in warp
    assert "<b>2.5.0</b>: all 41 layers on the NPU" in warp
    assert warp.count("<li>") == 2  # the sim builds; the board item has no build of its own


def test_every_cpu_layer_gets_its_op_target_and_one_line_takes_them_all():
    layers = [cpu_layer("/a/Gather", "a'out", reason=None, op_type="Gather"), cpu_layer("/b/Grid", "b_out"),
              cpu_layer("fused_7", None)]
    text = report_html.render(document([record("odd", "2.5.0", profile=profile(10, 0, 0, 100, 3, layers))]))
    odd = spec_sections(text)["odd"]
    assert "none given" in odd and "not an ONNX node" in odd
    assert "op_target: {&#x27;a&#x27;&#x27;out&#x27;: &#x27;npu&#x27;}" in odd  # YAML's doubled quote
    assert ("op_target: {&#x27;a&#x27;&#x27;out&#x27;: &#x27;npu&#x27;, &#x27;b_out&#x27;: &#x27;npu&#x27;}"
            in odd)


def test_a_spec_all_on_the_npu_is_one_line_per_version():
    records = [record("cnn", v, profile=profile(900, 2048, 4096, 8192, 12)) for v in ("2.3.2", "2.5.0")]
    cnn = spec_sections(report_html.render(document(records)))["cnn"]
    assert "<b>2.3.2</b>: all 12 layers on the NPU" in cnn and "<b>2.5.0</b>: all 12 layers on the NPU" in cnn
    assert "cpu-layers" not in cnn and "op_target" not in cnn
    assert cnn.count("<svg") == 3 and 'aria-label="CPU layers"' not in cnn  # no chart of zeros


def test_profile_charts_label_each_versions_estimates_from_zero():
    warp = spec_sections(report_html.render(document(profiled_records())))["warp"]
    figure = re.search(r'<figure class="profile">(.*?)</figure>', warp, re.S).group(1)
    svgs = re.findall(r"<svg.*?</svg>", figure, re.S)
    titles = [re.search(r'aria-label="([^"]+)"', svg).group(1) for svg in svgs]
    assert titles == ["Estimated cycles", "Estimated memory (internal + weight)", ".rknn file size",
                      "CPU layers"]
    values = [re.findall(r'paint-order="stroke">([^<]+)<', svg) for svg in svgs]
    assert values == [["2.3k cycles", "1.8k cycles"], ["17 KB", "15 KB"], ["1.5 MB", "1.4 MB"], ["1", "0"]]
    assert all(">0</text>" in svg for svg in svgs)  # every y axis starts at 0
    assert "internal 12 KB + weight 5 KB" in svgs[1]
    assert "estimates for the target (its layer table), not measurements" in figure
    assert "Red: that version&#x27;s item failed." in figure


def test_board_latency_is_in_the_results_table():
    rows = {" ".join(body.split()[:2]): body for _, body in
            results_rows(spec_sections(report_html.render(document(profiled_records())))["warp"])}
    assert "12.3 ms p90 15.7 ms core mask NPU_CORE_0" in rows["2.5.0 board"]
    assert "50 runs after 5 warm-up runs" in report_html.render(document(profiled_records()))
    assert "board latency" in report_html.render(document(profiled_records()))


def test_board_latency_chart_has_a_p90_whisker():
    records = profiled_records() + [record("warp", "2.3.2", "board", latency={
        "median_ms": 14.0, "p90_ms": 14.0, "runs": 50, "warmup": 5, "core_mask": "NPU_CORE_AUTO"})]
    warp = spec_sections(report_html.render(document(records)))["warp"]
    svg = re.search(r'<svg[^>]*aria-label="Board latency \(median, p90 whisker\)".*?</svg>', warp, re.S).group(0)
    assert re.findall(r'paint-order="stroke">([^<]+)<', svg) == ["14 ms", "12.3 ms"]
    assert svg.count("<path") == 1  # p90 above the median only for 2.5.0
    assert ">0</text>" in svg and "median 12.3 ms, p90 15.7 ms" in svg


def test_records_without_profile_or_latency_still_render():
    old = {k: v for k, v in cnn_records()[0].items() if k not in ("profile", "latency")}
    text = report_html.render(document([old, record("cnn", "2.3.2", profile={"cpu_layers": "junk"}, latency=7)]))
    cnn = spec_sections(text)["cnn"]
    assert "board latency" not in cnn
    assert "<b>2.3.2</b>: all ? layers on the NPU" in cnn and "no profile (no layer table)" in cnn
    no_keys = report_html.render(document([old]))
    assert "Where it runs" not in no_keys and "<svg" in no_keys


def test_a_failed_build_without_a_profile_says_why():
    broken = record("warp", "2.6.0", outcome="failed", **{"class": "BUILD"}, message="rknn.build returned -1")
    warp = spec_sections(report_html.render(document(profiled_records() + [broken])))["warp"]
    assert "<b>2.6.0</b>: <span class=\"muted\">no profile (BUILD)</span>" in warp
    assert warp.count(">BUILD</text>") == 4  # in place of its bar in every chart


def test_placement_and_performance_have_their_own_colours():
    colours = report_html.CLASS_COLOURS
    assert {"PLACEMENT", "PERFORMANCE"} <= set(colours)
    assert len(set(colours.values())) == len(colours)


def test_quantities_are_written_in_their_units():
    assert [report_charts.CYCLES.text(v) for v in (512, 2345, 123456, 1.5e6)] == ["512", "2.3k", "123k", "1.5M"]
    assert [report_charts.BYTES.text(v) for v in (0, 900, 17 * 1024, 1536 * 1024)] == ["0 B", "900 B", "17 KB",
                                                                                        "1.5 MB"]
    ticks, labels = report_charts.zero_axis([17 * 1024, 3000], report_charts.BYTES)
    assert ticks[0] == 0 and ticks[-1] >= 17 * 1024 and labels == ["0", "5 KB", "10 KB", "15 KB", "20 KB"]
    assert report_charts.zero_axis([2, 0], report_charts.COUNT)[1] == ["0", "1", "2"]
    assert report_charts.zero_axis([0], report_charts.COUNT)[1] == ["0", "1"]


def test_a_failures_hints_reduced_model_and_repro_bundle_are_in_its_details():
    failed = dict(broken_record(), hints=["RKNN detected nothing <really>"], repro="/tmp/j/2.5.0/repro",
                  reduction={"node": "upsample", "model": "/tmp/j/2.5.0/reduced.onnx"})
    page = report_html.render(document([failed]))
    details = page[page.index('class="failure"'):]
    assert "hints" in details and "RKNN detected nothing &lt;really&gt;" in details
    assert "reduced model: /tmp/j/2.5.0/reduced.onnx" in details and "repro bundle: /tmp/j/2.5.0/repro" in details
    assert "repro bundle" not in report_html.render(document([broken_record()]))


def test_charts_colour_each_metric_by_its_own_line_and_an_map_of_zero_is_no_bar():
    """A cosine that passed its line stays blue although the item failed (its mAP did); the mAP axis
    starts at 0, so an mAP of 0.0 has no height; the mAP chart has its gate line."""
    detection = {"layout": "single", "map50": 0.0, "ref_map50": 0.92, "agreement_map50": 0.0,
                 "counts": [["a.jpg", 0, 4]], "overlays": []}
    failed = record("yolo", "2.5.0", outcome="failed", **{"class": "ACCURACY"}, message="mAP",
                    thresholds={"cosine.output0": 0.99, "map50": 0.828}, detection=detection,
                    metrics={"cosine.output0": 0.9995, "map50": 0.0}, outputs=[output("output0", 0.9995)])
    svgs = re.findall(r"<svg.*?</svg>", report_html.render(document([failed])), re.S)
    cosine_svg = next(s for s in svgs if "Worst cosine" in s)
    map_svg = next(s for s in svgs if "mAP@0.5 against the labels" in s)
    [cosine_bar] = re.findall(r'<rect [^>]*fill="(#[0-9a-f]+)"><title>', cosine_svg)
    assert cosine_bar == report_charts.PASSED_COLOUR  # 0.9995 >= 0.99: not red
    [(height, colour)] = re.findall(r'<rect [^>]*height="([0-9.]+)" fill="(#[0-9a-f]+)"><title>', map_svg)
    assert float(height) == 0.0 and colour == report_charts.FAILED_COLOUR
    assert ">0<" in map_svg and "gate" in map_svg and "stroke-dasharray" in map_svg  # from 0, with its line
    assert re.search(rf'fill="{report_charts.FAILED_COLOUR}"[^>]*>0\.000<', map_svg)  # no bar: its value is red
    assert "zoomed" not in map_svg  # from 0


def test_a_detection_failure_lists_its_images_worst_first_with_the_log_tail():
    detection = {"layout": "heads", "map50": 0.5, "ref_map50": 0.9, "agreement_map50": 0.5, "overlays": [],
                 "counts": [["a.jpg", 3, 4], ["b.jpg", 0, 7], ["c.jpg", 2, 2], ["d.jpg", 5, 2]]}
    failed = record("yolo", "2.5.0", outcome="failed", **{"class": "ACCURACY"}, message="mAP", log_tail=LOG_TAIL,
                    detection=detection, metrics={"map50": 0.5}, outputs=[output("output0", 0.99)])
    details = report_html.render(document([failed]))
    details = details[details.index('class="failure"'):]
    table = details[details.index("worst first"):]
    assert [table.index(name) for name in ("b.jpg", "d.jpg", "a.jpg")] == sorted(
        table.index(name) for name in ("b.jpg", "d.jpg", "a.jpg"))  # differences 7, 3, 1
    assert "c.jpg" not in table.split("</table>")[0]  # the same count: not listed
    assert '<pre class="log">' in details


# ---------------------------------------------------------------- overlays: thumbnails, copies, page size


def photo_like(path, seed, size=(1288, 504)):
    """A picture that compresses about as badly as a photo: the overlay of a 640x480 image is 1288x504."""
    rng = np.random.default_rng(seed)
    coarse = Image.fromarray(rng.integers(0, 256, (size[1] // 8, size[0] // 8, 3), dtype=np.uint8))
    pixels = np.asarray(coarse.resize(size, Image.BICUBIC), dtype=np.float64) + rng.normal(0, 6, (size[1], size[0], 3))
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(path)
    return path


def detector_item(spec, version, overlays, failed=False):
    detection = {"layout": "single", "map50": 0.5, "ref_map50": 0.6, "agreement_map50": 0.8,
                 "counts": [["a.jpg", 3, 4]], "overlays": [str(p) for p in overlays]}
    extra = {"outcome": "failed", "class": "ACCURACY", "failures": ["mAP"]} if failed else {}
    return record(spec, version, detection=detection, metrics={"map50": 0.5}, outputs=[output("o", 0.99)], **extra)


def embedded_images(text):
    return [(kind, base64.b64decode(data))
            for kind, data in re.findall(r'src="data:image/(\w+);base64,([A-Za-z0-9+/=]+)"', text)]


def test_a_failed_items_overlays_are_embedded_whole_and_a_passed_items_as_thumbnails(tmp_path):
    big = [photo_like(tmp_path / f"{k}.png", k) for k in range(2)]
    text = report_html.render(document([detector_item("yolo", "2.3.2", big, failed=True),
                                        detector_item("yolo", "2.5.0", big)]))
    images = embedded_images(text)
    assert [kind for kind, _ in images] == ["png", "png", "jpeg", "jpeg"]  # the failed item (2.3.2) first
    assert [data for _, data in images[:2]] == [p.read_bytes() for p in big]
    for _, data in images[2:]:
        with Image.open(io.BytesIO(data)) as thumbnail:
            assert thumbnail.size == (report_html.THUMBNAIL_WIDTH, round(504 * report_html.THUMBNAIL_WIDTH / 1288))
        assert len(data) < 40_000
    assert text.count('<figure class="thumbnail">') == 2 and "thumbnails 320 px wide" in text


def test_overlays_are_copied_next_to_the_reports_which_name_the_copies(tmp_path):
    """REPORT-files/ outlives basetemp: the JSON report names the copies relative to its folder, the
    page embeds them and links them; a second run's folder replaces the first's whole."""
    job = tmp_path / "basetemp" / "rknn" / "yolo-1234" / "2.5.0" / "overlays"
    job.mkdir(parents=True)
    pictures = [photo_like(job / f"0{k}_val_00{k}.png", k, (200, 90)) for k in range(2)]
    doc = document([detector_item("yolo", "2.3.2", pictures, failed=True), detector_item("yolo", "2.5.0", pictures),
                    record("cnn", "2.5.0")])
    out = tmp_path / "out"
    html_doc, json_doc = with_copied_assets(doc, out / "r.html"), with_copied_assets(doc, out / "r.json")
    assert doc["items"][0]["detection"]["overlays"] == [str(p) for p in pictures]  # the document is left alone
    names = json_doc["items"][0]["detection"]["overlays"]
    assert names == ["r-files/yolo/2.3.2-sim/00_val_000.png", "r-files/yolo/2.3.2-sim/01_val_001.png"]
    assert json_doc["items"][1]["detection"]["overlays"] == names  # one picture named twice: one copy
    assert [(out / n).read_bytes() for n in names] == [p.read_bytes() for p in pictures]
    write_html_report(out / "r.html", html_doc)
    for picture in pictures:  # basetemp pruned
        picture.unlink()
    text = (out / "r.html").read_text()
    assert [data for kind, data in embedded_images(text)[:2]] == [(out / n).read_bytes() for n in names]
    assert 'href="r-files/yolo/2.3.2-sim/01_val_001.png"' in text and "image not found" not in text
    assert not any(p.name.endswith(".tmp") or p.name.endswith(".old") for p in out.iterdir())
    # A later run with other pictures: only its own files in the folder; without pictures, no folder.
    with_copied_assets(document([detector_item("yolo", "2.5.0", [photo_like(tmp_path / "new.png", 5, (50, 20))])]),
                       out / "r.json")
    assert sorted(str(p.relative_to(out)) for p in out.rglob("*.png")) == ["r-files/yolo/2.5.0-sim/new.png"]
    assert with_copied_assets(document([record("cnn", "2.5.0")]), out / "r.json")["items"][0]["detection"] is None
    assert sorted(p.name for p in out.iterdir()) == ["r.html"]


def test_report_sizes_with_two_versions(tmp_path):
    """The example suite with two versions, as recorded: 14 items, 4 of them detectors with three real
    fixture overlays each, all passed: under 250 KB (measured 213 KB; the real run's page: 273 KB, was
    715 KB with every overlay whole). A real-sized YOLO report, 12 items with three 1288x504 overlays
    each (1.4 MB PNGs, about a photo's): all passed, under 1.5 MB (measured 1.06 MB; every one whole:
    66 MB); with one failed item, that plus its three whole PNGs (measured 6.4 MB)."""
    from pytest_rknn.detection.overlay import draw_side_by_side

    val = FIXTURES / "yolo" / "val" / "images"
    boxes = np.array([[20, 30, 90, 100, 0.87, 1], [40, 20, 120, 110, 0.55, 2], [10, 10, 60, 60, 0.31, 0]])
    items = [record(spec, version) for spec in ("avgpool", "cnn", "cnn_int8", "dynamic", "two_input")
             for version in ("2.3.2", "2.5.0")]
    for spec in ("yolov5_heads_int8", "yolov5_single"):
        for version in ("2.3.2", "2.5.0"):
            overlays = [draw_side_by_side(val / f"val_00{k}.jpg", boxes, boxes[:2], tmp_path / spec / version /
                                          f"0{k}.png", class_names=["circle", "square", "triangle"]) for k in range(3)]
            items.append(detector_item(spec, version, overlays))
    small = len(report_html.render(document(items)).encode())
    assert small < 250_000, small

    photos = [photo_like(tmp_path / f"photo{k}.png", k) for k in range(3)]
    real = [detector_item(f"s{n // 2}", ("2.3.2", "2.5.0")[n % 2], photos) for n in range(12)]
    passed = len(report_html.render(document(real)).encode())
    assert passed < 1_500_000, passed
    real[0] = detector_item("s0", "2.3.2", photos, failed=True)
    whole = sum(len(base64.b64encode(p.read_bytes())) for p in photos)
    assert len(report_html.render(document(real)).encode()) < passed + whole


def test_a_compared_output_is_charted_before_and_now_against_its_gate():
    """With a baseline (or --rknn-compare-to), each compared cosine is two bars: the old value and
    now, now red only when the gate failed it, and the gate's line where the allowed worsening ends."""
    svgs = re.findall(r"<svg.*?</svg>", spec_sections(report_html.render(document(cnn_records())))["cnn"], re.S)
    [trend] = [s for s in svgs if "before and now" in s]
    bars = re.findall(r'<rect class="bar" data-value="([^"]+)"(?: data-threshold="([^"]+)")?[^>]*'
                      r'fill="(#[0-9a-f]+)"><title>([^<]*)</title>', trend)
    passed, failed = report_charts.PASSED_COLOUR, report_charts.FAILED_COLOUR
    assert [(float(v), float(t) if t else None, c) for v, t, c, _ in bars] == [
        (0.9999, None, passed), (0.5, 0.9989, failed),  # 2.3.2 sim: far under the gate
        (0.99999996, None, passed), (0.99999996, 0.999, passed)]  # 2.5.0 sim: unchanged
    assert "logits at baseline" in bars[0][3] and "now" in bars[1][3]
    assert trend.count('class="threshold"') == 2 and "gate" in trend
    assert "before and now · y axis zoomed, from 0.4<" in trend  # a zoomed axis says so
    lone = record("cnn", "2.5.0", outputs=[output("logits", 0.9999)])  # nothing compared: no such chart
    assert "before and now" not in report_html.render(document([lone]))


def test_each_output_is_judged_and_coloured_by_its_own_threshold(workdir):
    """checks.cosine.outputs gives `logits` a stricter line than `features`: at the same cosine 0.9995
    logits fails and features passes, in the verdict, the results table and the chart alike."""
    from pytest_rknn.judge import apply
    from pytest_rknn.measurement import Measurement
    from pytest_rknn.result import OutputMetrics, RunResult
    from pytest_rknn.spec import spec_from_dict

    spec = spec_from_dict({"model": "cnn.onnx", "checks": {"cosine": {"min": 0.99, "outputs": {"logits": 0.9999}}}},
                          base_dir=workdir)
    outputs = [OutputMetrics(name=name, ref_shape=[1, 10], samples=1, cosines=[0.9995], worst_cosine=0.9995,
                             worst_label="a.png", max_abs=0.01) for name in ("features", "logits")]
    result = RunResult(spec="cnn", version="2.5.0", backend="sim")
    apply(result, spec, Measurement(outputs))
    assert result.thresholds == {"cosine.features": 0.99, "cosine.logits": 0.9999}
    assert result.failures == ["output 'logits' sample 0 (a.png): cosine 0.999500 < min 0.9999"]
    page = report_html.render(document([dict(result.to_record(), fingerprint=fingerprint("2.5.0"))]))
    bars = {name: attrs for attrs, name in re.findall(r'<rect class="bar"([^>]*)><title>2.5.0 sim (\w+): ', page)}
    assert set(bars) == {"features", "logits"}
    assert 'data-threshold="0.99"' in bars["features"] and "data-failed" not in bars["features"]
    assert f'fill="{report_charts.PASSED_COLOUR}"' in bars["features"]
    assert 'data-threshold="0.9999"' in bars["logits"] and 'data-failed="true"' in bars["logits"]
    assert f'fill="{report_charts.FAILED_COLOUR}"' in bars["logits"]
    cells = dict(re.findall(r'<span class="name">(\w+)</span><span class="([^"]+)"', page))
    assert cells == {"features": "num", "logits": "num bad"}
