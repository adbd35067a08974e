"""Issue 14's acceptance test: a real-model-sized report, rendered by headless chromium, measured by the
browser itself (a script injected into a copy of the page, in this test only): a bar of 0.0 has no height,
a bar that passed its own line is not red, every chart has its line and a legend, the mAP axis starts at 0,
and the overlays' labels are class names."""

import html
import json
import re

import numpy as np
from PIL import Image, ImageDraw

from conftest import FIXTURES, render_in_chromium, run_chromium
from pytest_rknn import report_charts
from pytest_rknn.detection.overlay import draw_side_by_side
from pytest_rknn.report_html import THUMBNAIL_WIDTH, write_html_report
from test_report_html import document, output, photo_like, record

LABELS = FIXTURES / "yolo" / "val" / "labels"
CLASS_NAMES = LABELS.joinpath("classes.txt").read_text().split()  # circle, square, triangle, cross
IMAGE_SIZE = (640, 480)  # a real model's input: each overlay is 1288x504
THRESHOLDS = {"cosine.output0": 0.99, "cosine.output1": 0.99, "cosine.output2": 0.99, "agreement_map50": 0.95}
FAILED = ("s0", "2.5.0")


def real_boxes(k, size=IMAGE_SIZE):
    """The fixture labels of val_00k as detections in a 640x480 image: x1, y1, x2, y2, score, class."""
    rows = [line.split() for line in (LABELS / f"val_00{k}.txt").read_text().splitlines() if line.strip()]
    width, height = size
    boxes = []
    for n, (cls, cx, cy, w, h) in enumerate(rows):
        cx, cy, w, h = float(cx) * width, float(cy) * height, float(w) * width, float(h) * height
        boxes.append([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2, 0.91 - 0.17 * n, int(cls)])
    return np.array(boxes)


class DrawnText:
    """Every label the overlay code draws: (rectangle under it, its fill, the text, where, font)."""

    def __init__(self, monkeypatch):
        self.labels, self.titles, self._last_fill = [], [], None
        text, rectangle = ImageDraw.ImageDraw.text, ImageDraw.ImageDraw.rectangle

        def recording_rectangle(draw, xy, fill=None, outline=None, width=1):
            self._last_fill = (tuple(xy), fill) if fill is not None else None
            return rectangle(draw, xy, fill=fill, outline=outline, width=width)

        def recording_text(draw, xy, string, fill=None, font=None, anchor=None, *args, **kwargs):
            if anchor is None and self._last_fill is not None:  # a box's label, on its filled rectangle
                self.labels.append((self._last_fill[0], self._last_fill[1], string, tuple(xy), font, fill))
            else:
                self.titles.append(string)
            self._last_fill = None
            return text(draw, xy, string, fill, font, anchor, *args, **kwargs)

        monkeypatch.setattr(ImageDraw.ImageDraw, "rectangle", recording_rectangle)
        monkeypatch.setattr(ImageDraw.ImageDraw, "text", recording_text)


def overlays(folder, seed, candidate_of, drawn):
    """Three 1288x504 overlays of photo-like 640x480 images with the fixture's boxes, drawn as the
    plugin draws them (class names from the labels); the labels drawn into each, by file."""
    found, labels = [], {}
    folder.mkdir(parents=True, exist_ok=True)
    for k in range(3):
        image = photo_like(folder / f"image{seed}{k}.png", 10 * seed + k, IMAGE_SIZE)
        reference = real_boxes(k)
        before = len(drawn.labels)
        found.append(draw_side_by_side(image, reference, candidate_of(reference), folder / f"0{k}_val_00{k}.png",
                                       class_names=CLASS_NAMES))
        labels[found[-1].name] = drawn.labels[before:]
    return found, labels


def detector(spec, version, pictures, heads, failed=False):
    outputs = [f"output{n}" for n in range(3 if heads else 1)]
    cosines = {name: 0.9995 - 0.0002 * n for n, name in enumerate(outputs)}
    agreement = 0.0 if failed else 0.97 + 0.005 * (int(spec[1:]) % 3)
    detection = {"layout": "heads" if heads else "single", "agreement_map50": agreement, "agreement_map": agreement,
                 "counts": [[f"val_00{k}.jpg", len(real_boxes(k)), len(real_boxes(k))] for k in range(3)],
                 "slice_cosines": {name: {"boxes": 0.999, "objectness": 0.998, "classes": 0.997} for name in outputs},
                 "overlays": [str(p) for p in pictures]}
    extra = {}
    if failed:
        message = "agreement mAP@0.5 0.000 < 0.95"
        extra = {"outcome": "failed", "class": "ACCURACY", "message": message, "failures": [message]}
    return record(spec, version, detection=detection, thresholds={k: v for k, v in THRESHOLDS.items()
                                                                  if k[7:] in outputs or k == "agreement_map50"},
                  metrics={**{f"cosine.{n}": v for n, v in cosines.items()}, "agreement_map50": agreement},
                  outputs=[output(n, v) for n, v in cosines.items()], **extra)


MEASURE = r"""
<script>
window.addEventListener("load", () => {
  const found = {charts: [], images: [], labels: []};
  const fill = (element) => getComputedStyle(element).fill;
  for (const svg of document.querySelectorAll("svg.chart")) {
    const box = (element) => { const r = element.getBoundingClientRect();
                               return {x: r.x, y: r.y, width: r.width, height: r.height, bottom: r.bottom}; };
    found.charts.push({
      title: svg.getAttribute("aria-label"),
      rendered: box(svg),
      bars: [...svg.querySelectorAll("rect.bar")].map((bar) => ({
        value: parseFloat(bar.dataset.value), threshold: bar.dataset.threshold === undefined ? null :
          parseFloat(bar.dataset.threshold), fill: fill(bar), box: box(bar), bbox_height: bar.getBBox().height})),
      lines: [...svg.querySelectorAll("line.threshold, line.reference")].map((line) => ({
        kind: line.getAttribute("class"), value: parseFloat(line.dataset.value), box: box(line),
        stroke: getComputedStyle(line).stroke, visible: getComputedStyle(line).visibility})),
      ticks: [...svg.querySelectorAll("line.tick")].map((tick) => ({value: parseFloat(tick.dataset.value),
                                                                    y: box(tick).y})),
      baseline: svg.querySelector("line.baseline") && box(svg.querySelector("line.baseline")).y,
      legend: [...svg.querySelectorAll("g.legend text")].map((text) => ({text: text.textContent,
                                                                         width: text.getBBox().width})),
    });
  }
  const details = [...document.querySelectorAll("details.overlays")];
  const closed = details.filter((d) => !d.open);
  details.forEach((d) => { d.open = true; });  // to measure the thumbnails of passed items too
  const wanted = JSON.parse(document.getElementById("label-rects").textContent);
  for (const [index, image] of [...document.querySelectorAll("details.overlays img")].entries()) {
    const r = image.getBoundingClientRect();
    const item = image.closest("details").querySelector("summary").textContent;
    found.images.push({item, section: image.closest("section").id, alt: image.alt, complete: image.complete, natural: [image.naturalWidth,
                       image.naturalHeight], rendered: [r.width, r.height], thumbnail:
                       image.closest("figure").classList.contains("thumbnail"),
                       initially_open: !closed.includes(image.closest("details"))});
    const rects = wanted[image.alt];
    if (!rects || image.closest("figure").classList.contains("thumbnail")) continue;
    const canvas = document.createElement("canvas");  // the pixels the browser decoded, at their own size
    canvas.width = image.naturalWidth; canvas.height = image.naturalHeight;
    const context = canvas.getContext("2d");
    context.drawImage(image, 0, 0);
    for (const [x0, y0, x1, y1] of rects) {
      found.labels.push({alt: image.alt, rect: [x0, y0, x1, y1],
                         rgba: Array.from(context.getImageData(x0, y0, x1 - x0, y1 - y0).data)});
    }
  }
  const out = document.createElement("pre");
  out.id = "measured";
  out.textContent = JSON.stringify(found);
  document.body.appendChild(out);
});
</script>
"""


def measured_by_chromium(page, folder):
    """Chromium loads `page`, runs its scripts and prints the DOM: the JSON the script left in it."""
    done = run_chromium(page, folder, "--virtual-time-budget=5000", "--dump-dom", timeout=60)
    found = re.search(r'<pre id="measured">(.*?)</pre>', done.stdout, re.S)
    assert found, "the measuring script wrote nothing: " + done.stderr[-2000:]
    return json.loads(html.unescape(found.group(1)))


def _rgb(css):
    return tuple(int(v) for v in re.findall(r"\d+", css)[:3])


def _hex_rgb(code):
    return tuple(int(code[i:i + 2], 16) for i in (1, 3, 5))


def write_real_sized(tmp_path, monkeypatch):
    """The written report of 12 detector items (6 specs at 2.3.2 and 2.5.0; s1, s3 and s5 with three heads),
    with the label texts drawn into the overlays; s0 2.5.0 failed: RKNN found the boxes with other classes
    (agreement mAP 0.0) while its cosines passed."""
    with monkeypatch.context() as patched:
        drawn = DrawnText(patched)
        jitter = np.array([3, -2, 2, 4, -0.05, 0])
        passed_pictures, passed_labels = overlays(tmp_path / "passed", 1, lambda boxes: boxes + jitter, drawn)
        wrong = np.array([0, 0, 0, 0, -0.3, 1])  # the next class, a lower score
        failed_pictures, failed_labels = overlays(
            tmp_path / "failed", 2, lambda boxes: (boxes + wrong) % [1e9, 1e9, 1e9, 1e9, 1e9, len(CLASS_NAMES)],
            drawn)
    items = [detector(f"s{n // 2}", version, failed_pictures if (f"s{n // 2}", version) == FAILED else passed_pictures,
                      heads=n // 2 % 2 == 1, failed=(f"s{n // 2}", version) == FAILED)
             for n, version in ((n, ("2.3.2", "2.5.0")[n % 2]) for n in range(12))]
    page = tmp_path / "out" / "report.html"
    write_html_report(page, document(items))
    return page, drawn, failed_labels, passed_labels


def test_issue_14_a_real_sized_report_as_the_browser_renders_it(tmp_path, monkeypatch):
    page, drawn, failed_labels, passed_labels = write_real_sized(tmp_path, monkeypatch)
    # The labels the overlay code drew: a class name and a score each, never a class index.
    assert drawn.titles.count("onnxruntime") == drawn.titles.count("RKNN") == 6
    for rect, colour, text, xy, font, ink in drawn.labels:
        name, score = text.rsplit(" ", 1)
        assert name in CLASS_NAMES and re.fullmatch(r"\d\.\d\d", score), text
    assert {t.rsplit(" ", 1)[0] for _, _, t, _, _, _ in drawn.labels} == set(CLASS_NAMES)
    assert sum(len(v) for v in failed_labels.values()) == 2 * sum(len(real_boxes(k)) for k in range(3))

    # The copy the browser measures: the page as written, with the script and the label rectangles to read.
    rects = {name: [list(rect[:2]) + [rect[2] + 1, rect[3] + 1] for rect, *_ in labels]
             for name, labels in failed_labels.items()}
    measured_page = page.with_name("measured.html")
    text = page.read_text(encoding="utf-8")
    assert "<script" not in text  # the product has no script: the one below is the test's
    measured_page.write_text(text.replace(
        "</body>", f'<script type="application/json" id="label-rects">{json.dumps(rects)}</script>{MEASURE}</body>'),
        encoding="utf-8")
    found = measured_by_chromium(measured_page, tmp_path)

    charts = found["charts"]
    assert len(charts) == 12  # a cosine and an agreement chart per spec
    failed_rgb = _hex_rgb(report_charts.FAILED_COLOUR)
    zeros = 0
    for chart in charts:
        assert chart["rendered"]["width"] > 100 and chart["rendered"]["height"] > 100, chart["title"]
        assert chart["bars"], chart["title"]
        for bar in chart["bars"]:
            assert bar["threshold"] is not None, chart["title"]
            passes = bar["value"] >= bar["threshold"]
            assert (_rgb(bar["fill"]) == failed_rgb) == (not passes), (chart["title"], bar)
            assert abs(bar["box"]["bottom"] - chart["baseline"]) < 0.5, (chart["title"], bar)  # on the axis
            if bar["value"] == 0.0:
                zeros += 1
                assert bar["box"]["height"] < 0.5 and bar["bbox_height"] < 0.5, (chart["title"], bar)
            else:
                assert bar["box"]["height"] > 5, (chart["title"], bar)
        lines = [line for line in chart["lines"] if line["kind"] == "threshold"]
        assert lines and all(line["box"]["width"] > 10 and line["visible"] == "visible" for line in lines), chart
        assert {line["value"] for line in lines} == {bar["threshold"] for bar in chart["bars"]}
        assert chart["legend"] and all(entry["width"] > 0 for entry in chart["legend"]), chart["title"]
        legend = [entry["text"] for entry in chart["legend"]]
        assert "passed" in legend and any(t in legend for t in ("min", "gate")), legend
        if chart["title"].startswith("Agreement mAP"):
            ticks = sorted(chart["ticks"], key=lambda t: t["value"])
            assert ticks[0]["value"] == 0.0 and ticks[-1]["value"] >= 1.0, ticks
            assert abs(ticks[0]["y"] - chart["baseline"]) < 0.5  # the axis starts at 0, where the bars stand
            assert "gate" in legend
    assert zeros == 1  # the failed item's agreement mAP
    map_charts = [c for c in charts if c["title"].startswith("Agreement mAP")]
    assert len(map_charts) == 6 and all(c["lines"] for c in map_charts)
    assert [c for c in charts if any(_rgb(b["fill"]) == failed_rgb for b in c["bars"])] == [
        c for c in map_charts if any(b["value"] == 0.0 for b in c["bars"])]  # its cosines are blue

    # Overlays: the failed item's whole and shown open, the passed items' as thumbnails in closed details.
    images = found["images"]
    assert all(image["complete"] and image["natural"][0] > 0 for image in images)
    whole = [image for image in images if not image["thumbnail"]]
    assert len(whole) == 3 and all(image["section"] == "spec-s0" and image["item"].startswith(
        "Detection overlays, 2.5.0 sim") for image in whole), whole
    assert all(image["natural"] == [1288, 504] and image["rendered"][0] > 1100 and image["initially_open"]
               for image in whole), whole
    thumbnails = [image for image in images if image["thumbnail"]]
    assert len(thumbnails) == 3 * 11
    assert all(image["natural"] == [THUMBNAIL_WIDTH, round(504 * THUMBNAIL_WIDTH / 1288)]
               and image["rendered"][0] <= THUMBNAIL_WIDTH + 2 and not image["initially_open"]
               for image in thumbnails), thumbnails[:2]

    # The label pixels the browser decoded from the failed item's overlays are the glyphs of
    # "<class name> <score>" on the class's colour, as drawn now; a class index would be other glyphs.
    assert len(found["labels"]) == sum(len(v) for v in failed_labels.values())
    by_rect = {(alt, tuple(entry[0][:2])): entry for alt, labels in failed_labels.items() for entry in labels}
    for label in found["labels"]:
        rect, colour, text, xy, font, ink = by_rect[(label["alt"], tuple(label["rect"][:2]))]
        x0, y0, x1, y1 = label["rect"]
        shown = np.array(label["rgba"], dtype=np.int16).reshape(y1 - y0, x1 - x0, 4)[:, :, :3]
        assert np.abs(shown - _label_image(rect, colour, text, xy, font, ink)).max() <= 2, text
        index = f"{CLASS_NAMES.index(text.rsplit(' ', 1)[0])} {text.rsplit(' ', 1)[1]}"
        assert np.abs(shown - _label_image(rect, colour, index, xy, font, ink)).max() > 50, text

    screenshot = render_in_chromium(page, tmp_path, (1280, 2400))
    assert Image.open(screenshot).size == (1280, 2400)


def _label_image(rect, colour, text, xy, font, ink):
    """A label drawn alone: its rectangle of `colour` with `text` at `xy` (page coordinates)."""
    x0, y0 = rect[0], rect[1]
    picture = Image.new("RGB", (rect[2] + 1 - x0, rect[3] + 1 - y0), colour)
    ImageDraw.Draw(picture).text((xy[0] - x0, xy[1] - y0), text, fill=ink, font=font)
    return np.asarray(picture, dtype=np.int16)
