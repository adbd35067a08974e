"""Localisation on failure: a simulator item that fails ACCURACY gets the toolkit's per-layer analysis
(accuracy_analysis, after a build of its own) on its worst sample, and its message names the first layer
that diverges. The parser on real error_analysis.txt lines; end to end with the real simulator;
--rknn-no-localise."""

import json
import math
from pathlib import Path

import numpy as np
import pytest

from conftest import write_spec

from pytest_rknn.diagnosis.localise import divergence_note, first_below, localise, parse_error_analysis, worst_output
from pytest_rknn.result import OutputMetrics, RunResult

# Real lines: rknn-toolkit2 2.5.0 on fixtures/models/int8_outlier.onnx, built int8 (note the touching columns
# `100.37954-0.33949`), and 2.3.2 on a Conv+Relu network (its euclidean errors have 4 decimals).
ANALYSIS_250 = """\
# simulator_error: calculate the output error of each layer of the simulator (compared to the 'golden' value).
#              entire: output error of each layer between 'golden' and 'simulator', these errors will accumulate layer by layer.
#              single: single-layer output error between 'golden' and 'simulator', can better reflect the single-layer accuracy of the simulator.

layer_name                          simulator_error                    
                                entire              single             
                             cos      euc        cos      euc          
-------------------------------------------------------------------
[Input] x                  1.00000 | 0.00000   1.00000 | 0.00000       
[exDataConvert] x_int8     1.00000 | 0.06288   1.00000 | 0.06288       
[Conv] c1                  
[Relu] r1                  0.99997 | 0.43014   0.99997 | 0.43014       
[Conv] outlier             -0.33949 | 100.37954-0.33949 | 100.37954    
[Conv] c3                  
[Relu] r3                  0.34783 | 60.37288  0.99992 | 0.78311       
[Conv] y_int8              0.17430 | 43.97294  0.99993 | 0.53507       
[exDataConvert] y          0.17430 | 43.97294  0.99996 | 0.40689       
"""

ANALYSIS_232 = """\
-------------------------------------------------------------------
[Input] x                  1.00000 | 0.0       1.00000 | 0.0           
[exDataConvert] x_int8     1.00000 | 0.0628    1.00000 | 0.0628        
[Conv] c1                  
[Relu] r1                  0.99994 | 0.4750    0.99994 | 0.4750        
[Conv] c2                  
[Relu] r2                  0.19386 | 75.7737   0.19386 | 75.7737       
[Conv] c3                  
[Relu] r3                  0.49171 | 70.4111   0.99998 | 0.5012        
"""


def test_the_parser_reads_every_row_of_a_real_analysis():
    rows = parse_error_analysis(ANALYSIS_250)
    assert [(r["op"], r["layer"]) for r in rows] == [
        ("Input", "x"), ("exDataConvert", "x_int8"), ("Conv", "c1"), ("Relu", "r1"), ("Conv", "outlier"),
        ("Conv", "c3"), ("Relu", "r3"), ("Conv", "y_int8"), ("exDataConvert", "y")]
    assert rows[4] == dict(layer="outlier", op="Conv", entire_cos=-0.33949, entire_euc=100.37954,
                           single_cos=-0.33949, single_euc=100.37954)
    assert rows[6]["entire_cos"] == 0.34783 and rows[6]["single_cos"] == 0.99992 and rows[6]["single_euc"] == 0.78311
    assert rows[2]["single_cos"] is None  # fused into the Relu after it: no numbers of its own


def test_first_divergences_single_and_entire():
    rows = parse_error_analysis(ANALYSIS_250)
    assert first_below(rows, "single_cos", 0.99)["layer"] == "outlier"
    assert first_below(rows, "entire_cos", 0.99)["layer"] == "outlier"
    assert first_below(rows, "single_cos", 0.99998)["layer"] == "r1"  # the threshold decides
    assert first_below(rows, "single_cos", -0.5) is None
    nan = parse_error_analysis("[Relu] dead                  nan | 0.00000   nan | 0.00000\n" + ANALYSIS_250)
    assert math.isnan(nan[0]["single_cos"]) and first_below(nan, "single_cos", 0.99)["layer"] == "outlier"


def test_a_fused_layer_is_named_with_the_row_it_went_into():
    rows = parse_error_analysis(ANALYSIS_232)
    single = first_below(rows, "single_cos", 0.99)
    assert (single["layer"], single["op"], single["fused"], single["single_cos"]) == ("r2", "Relu", ["Conv c2"], 0.19386)
    record = dict(threshold=0.99, first_single=single, first_entire=single)
    assert divergence_note(record) == "first divergence: r2 (Relu, fused with Conv c2), single cosine 0.193860"


def test_only_accumulated_error_is_said_so():
    rows = parse_error_analysis(ANALYSIS_232)
    record = dict(threshold=0.6, first_single=first_below(rows, "single_cos", 0.6),
                  first_entire=first_below(rows, "entire_cos", 0.6))
    assert record["first_single"]["layer"] == "r2"
    record = dict(threshold=0.5, first_single=None, first_entire=first_below(rows, "entire_cos", 0.5))
    assert divergence_note(record) == ("no layer alone has a single cosine below 0.5; the accumulated error first "
                                       "does at r2 (Relu, fused with Conv c2), entire cosine 0.193860")


def failed_result(cosines):
    result = RunResult(spec="s", version="2.5.0", backend="sim", failure_class="ACCURACY", message="[m]")
    for name, (worst, sample, threshold) in cosines.items():
        result.outputs.append(OutputMetrics(name=name, ref_shape=[1], samples=3, worst_cosine=worst,
                                            worst_sample=sample))
        result.thresholds[f"cosine.{name}"] = threshold
    return result


def test_the_worst_sample_of_the_output_the_message_names():
    result = failed_result({"a": (0.99, 1, 0.98), "b": (0.97, 2, 0.98), "c": (0.5, 0, 0.99)})
    assert worst_output(result) == ("b", 2, 0.98, True)  # the first failing output, in model order
    assert worst_output(failed_result({"a": (math.nan, 2, 0.9), "b": (0.1, 1, 0.99)})) == ("a", 2, 0.9, True)
    result.outputs[0].nonfinite, result.outputs[0].nonfinite_sample = 3, 4
    assert worst_output(result) == ("a", 4, 0.98, True)  # NaN/Inf is checked before the cosine
    passing = failed_result({"a": (0.999, 1, 0.99), "b": (0.995, 2, 0.99)})  # failed on max_abs, say
    assert worst_output(passing) == ("b", 2, 0.99, False)


def test_a_failure_of_another_check_gets_the_table_but_keeps_its_message(tmp_path):
    (tmp_path / "error_analysis.txt").write_text(ANALYSIS_250)
    result = failed_result({"y": (0.995, 1, 0.99)})  # the cosine passes: a detection or max_abs failure
    localise(result, lambda sample: tmp_path / "error_analysis.txt")
    assert result.message == "[m]" and result.localisation["first_single"]["layer"] == "outlier"


def test_localise_adds_evidence_and_never_changes_the_outcome(tmp_path):
    (tmp_path / "error_analysis.txt").write_text(ANALYSIS_250)
    result = failed_result({"y": (0.17, 1, 0.99)})
    asked = []
    localise(result, lambda sample: asked.append(sample) or tmp_path / "error_analysis.txt")
    assert asked == [1]
    assert result.failure_class == "ACCURACY"
    assert result.message == "[m]; first divergence: outlier (Conv), single cosine -0.339490"
    assert result.localisation["first_single"]["layer"] == "outlier"
    assert result.localisation["sample"] == 1 and result.localisation["threshold"] == 0.99
    json.dumps(result.to_record())  # JSON-able

    def fails(sample):
        from pytest_rknn.errors import TIMEOUT, RknnError
        raise RknnError(TIMEOUT, "rknn-toolkit2 2.5.0 accuracy_analysis: no result after 1 s, during build")

    result = failed_result({"y": (0.17, 1, 0.99)})
    localise(result, fails)
    assert (result.failure_class, result.message) == ("ACCURACY", "[m]")
    assert "no result after 1 s" in result.localisation["error"]
    assert result.warnings == ["the per-layer accuracy analysis did not finish: rknn-toolkit2 2.5.0 "
                               "accuracy_analysis: no result after 1 s, during build"]


# ---------------------------------------------------------------- end to end, the real simulator

OUTLIER_SPEC = """\
model: int8_outlier.onnx
inputs:
  x: {random: [0, 1], count: 2, seed: 1}
convert:
  quantize: {dataset: calib/*.npy}
checks:
  cosine: {min: 0.98}
"""


def outlier_folder(workdir):
    calib = workdir / "calib"
    calib.mkdir()
    rng = np.random.default_rng(5)
    for i in range(4):
        np.save(calib / f"c{i}.npy", rng.random((1, 3, 32, 32)).astype(np.float32))
    write_spec(workdir, "outlier", OUTLIER_SPEC)
    return workdir


def items(report):
    return {(i["spec"], i["version"]): i for i in json.loads(Path(report).read_text())["items"]}


@pytest.mark.parametrize("version", ["2.5.0", "2.3.2"])
def test_an_int8_layer_that_breaks_is_named_as_the_first_divergence(run_pytest, workdir, version):
    folder = outlier_folder(workdir)
    report = folder / "report.json"
    result, basetemp = run_pytest(str(folder), f"--rknn-toolkit={version}", f"--rknn-json={report}", "--rknn-no-cache")
    result.assert_outcomes(failed=1)
    item = items(report)[("outlier", version)]
    assert item["class"] == "ACCURACY"
    assert item["message"].startswith("output 'y' sample ")
    assert "< min 0.98; first divergence: outlier (Conv), single cosine -0." in item["message"]
    result.stdout.fnmatch_lines(["*first divergence: outlier (Conv), single cosine*"])
    loc = item["localisation"]
    assert loc["first_single"]["layer"] == "outlier" and loc["first_single"]["single_cos"] < 0.98
    assert loc["first_entire"]["layer"] == "outlier"
    assert loc["threshold"] == 0.98 and loc["output"] == "y"
    assert loc["sample"] == item["outputs"][0]["worst_sample"]
    before = [r for r in loc["rows"][:loc["rows"].index(next(r for r in loc["rows"] if r["layer"] == "outlier"))]
              if r["single_cos"] is not None]
    assert before and all(r["single_cos"] > 0.999 for r in before)  # nothing diverges before it
    analysis = Path(loc["file"])
    assert analysis.is_file() and analysis.parent.parent.name == "analysis"
    assert analysis.parent.parent.parent.name == version  # JOB/analysis/toolkit/error_analysis.txt
    assert not (analysis.parent / "golden").exists()  # the per-layer dumps are removed
    assert item["timings"]["localise"] == loc["seconds"] > 0


def test_a_failing_cache_hit_reuses_the_stored_analysis_and_starts_no_worker(run_pytest, workdir):
    folder = outlier_folder(workdir)
    report = folder / "report.json"
    run_pytest(str(folder), f"--rknn-json={report}")  # the analysis is stored in the result cache
    first = items(report)[("outlier", "2.5.0")]
    result, basetemp = run_pytest(str(folder), f"--rknn-json={report}")
    result.assert_outcomes(failed=1)
    again = items(report)[("outlier", "2.5.0")]
    assert again["measurement_cache"] == "hit"
    assert again["message"] == first["message"] and "first divergence: outlier (Conv)" in again["message"]
    assert again["localisation"]["rows"] == first["localisation"]["rows"]
    analysis = next((basetemp / "rknn").glob("outlier-*/2.5.0/analysis"))
    assert (analysis / "toolkit" / "error_analysis.txt").is_file()
    assert not (analysis / "job.json").exists()  # no analysis job ran


def test_an_analysis_past_its_time_limit_leaves_the_outcome_and_says_it_did_not_finish(run_pytest, workdir):
    folder = outlier_folder(workdir)
    report = folder / "report.json"
    result, basetemp = run_pytest(str(folder), f"--rknn-json={report}", "--rknn-no-cache",
                                  "--rknn-localise-timeout=0.01")
    result.assert_outcomes(failed=1)
    item = items(report)[("outlier", "2.5.0")]
    assert item["class"] == "ACCURACY" and item["message"].endswith("< min 0.98")
    assert "no result after 0.01 s" in item["localisation"]["error"]
    assert "--rknn-localise-timeout" in item["localisation"]["error"]
    assert [w for w in item["warnings"] if w.startswith("the per-layer accuracy analysis did not finish: "
                                                         "rknn-toolkit2 2.5.0 accuracy_analysis: no result after")]


def test_no_localise_runs_no_analysis(run_pytest, workdir):
    folder = outlier_folder(workdir)
    report = folder / "report.json"
    result, basetemp = run_pytest(str(folder), f"--rknn-json={report}", "--rknn-no-localise")
    result.assert_outcomes(failed=1)
    item = items(report)[("outlier", "2.5.0")]
    assert item["class"] == "ACCURACY" and "first divergence" not in item["message"]
    assert item["localisation"] is None and "localise" not in item["timings"]
    assert not list((basetemp / "rknn").glob("outlier-*/2.5.0/analysis"))


def test_the_ini_twin_turns_it_off_too(run_pytest, workdir):
    folder = outlier_folder(workdir)
    report = folder / "report.json"
    result, basetemp = run_pytest(str(folder), f"--rknn-json={report}", "-o", "rknn_no_localise=true")
    result.assert_outcomes(failed=1)
    assert items(report)[("outlier", "2.5.0")]["localisation"] is None


def test_the_html_report_shows_the_first_divergences_and_a_chart_along_the_layers(tmp_path):
    import xml.etree.ElementTree as ElementTree

    from pytest_rknn import report_html

    (tmp_path / "error_analysis.txt").write_text(ANALYSIS_250)
    result = failed_result({"y": (0.17, 1, 0.99)})
    localise(result, lambda sample: tmp_path / "error_analysis.txt")
    text = report_html.render({"items": [result.to_record()]})
    section = text[text.index('<div class="localisation">'):]
    section = section[:section.index("</svg>") + len("</svg>")]
    assert "first layer below 0.99 alone (single): <code>outlier</code> (Conv), cosine" in section
    svg = ElementTree.fromstring(section[section.index("<svg"):])
    lines = svg.findall("{http://www.w3.org/2000/svg}polyline")
    assert len(lines) == 2  # single and entire
    assert all(len(line.get("points").split()) == 7 for line in lines)  # the layers with numbers
    assert "outlier (Conv): single cosine -0.33949" in section

    failed = failed_result({"y": (0.17, 1, 0.99)})
    failed.localisation = {"output": "y", "sample": 1, "threshold": 0.99, "error": "no result after 300 s"}
    assert "the analysis did not finish: no result after 300 s" in report_html.render({"items": [failed.to_record()]})
