"""Job folders do not fill the disk: at the end of a session the arrays (inputs.npz, outputs.npz)
and overlays of passed items go; failed items keep theirs, and --rknn-keep-outputs keeps everything."""

import re

import numpy as np

from conftest import MODELS, job_dirs, write_spec

from pytest_rknn.jobdir import trim
from pytest_rknn.recording import passed_job_folders

KEPT_ALWAYS = ("job.json", "result.json", "log.txt")


def make_job(folder, rknn_name="m.rknn"):
    folder.mkdir(parents=True)
    for name in KEPT_ALWAYS + (rknn_name,):
        (folder / name).write_text("x")
    np.savez(folder / "inputs.npz", s0_i0=np.zeros(1000, np.float32))
    np.savez(folder / "outputs.npz", s0_o0=np.zeros(1000, np.float32))
    (folder / "overlays").mkdir()
    (folder / "overlays" / "00_a.png").write_bytes(b"\x89PNG" + b"\0" * 100)
    return folder


def record(spec, job_dir, outcome="passed", backend="sim"):
    return {"spec": spec, "outcome": outcome, "backend": backend, "log": str(job_dir / "log.txt")}


def test_only_the_folders_of_specs_whose_items_all_passed_are_trimmed(tmp_path):
    root = tmp_path / "rknn"
    good_sim, good_board = make_job(root / "good-1234abcd" / "2.5.0"), make_job(root / "good-1234abcd" / "2.5.0-board")
    good_old = make_job(root / "good-1234abcd" / "2.3.2")  # run for the gate only: no item of its own
    bad_sim, bad_old = make_job(root / "bad-9876fedc" / "2.5.0"), make_job(root / "bad-9876fedc" / "2.3.2")
    lone = make_job(root / "lone-00000000" / "2.5.0")  # used by a plain test's rknn.run(): no record names it
    records = [record("good", good_sim), record("good", good_board, backend="board"),
               record("bad", bad_sim, "failed"), record("bad", bad_old),
               {"spec": "bad", "outcome": "failed", "log": None}]  # e.g. a board CRASH: no log of its own
    assert passed_job_folders(records) == sorted([good_sim, good_board, good_old])

    freed = sum(trim(folder) for folder in passed_job_folders(records))
    assert freed > 8000
    for folder in (good_sim, good_board, good_old):
        assert sorted(p.name for p in folder.iterdir()) == sorted(KEPT_ALWAYS + ("m.rknn",))
    for folder in (bad_sim, bad_old, lone):  # a failed spec keeps every version's arrays to compare them
        assert {"inputs.npz", "outputs.npz", "overlays"} <= {p.name for p in folder.iterdir()}


def test_trim_can_leave_the_overlays_and_a_second_trim_frees_nothing(tmp_path):
    folder = make_job(tmp_path / "s-00000000" / "2.5.0")
    assert trim(folder, overlays=False) > 0
    assert (folder / "overlays" / "00_a.png").is_file() and not (folder / "outputs.npz").exists()
    assert trim(folder, overlays=False) == 0


PASSING = "model: cnn.onnx\n"
FAILING = "model: cnn.onnx\nchecks: {cosine: {min: 0.99999999}}\n"  # no fp16 build is that close


def test_a_passing_item_loses_its_arrays_a_failing_one_keeps_them_unless_told_to_keep_all(run_pytest, pytester):
    (pytester.path / "cnn.onnx").write_bytes((MODELS / "cnn.onnx").read_bytes())
    write_spec(pytester.path, "good", PASSING)
    write_spec(pytester.path, "strict", FAILING)
    report = pytester.path / "report.json"

    result, basetemp = run_pytest(str(pytester.path), f"--rknn-json={report}")
    result.assert_outcomes(passed=1, failed=1)
    good, strict = job_dirs(basetemp, "good")["2.5.0"], job_dirs(basetemp, "strict")["2.5.0"]
    assert not (good / "outputs.npz").exists() and not (good / "inputs.npz").exists()
    assert all((good / name).is_file() for name in KEPT_ALWAYS + ("good.rknn",))  # what the reports link
    assert (strict / "outputs.npz").is_file() and (strict / "inputs.npz").is_file()
    assert re.search(r"^pytest-rknn: removed \d+\.\d MB of inputs and outputs from the job folders of passed items "
                     rf"in {re.escape(str(basetemp / 'rknn'))} \(--rknn-keep-outputs keeps them\)$",
                     result.stdout.str(), re.M)
    assert report.is_file()  # written before anything was removed

    result, basetemp = run_pytest(str(pytester.path), "--rknn-keep-outputs")
    result.assert_outcomes(passed=1, failed=1)
    for spec in ("good", "strict"):
        assert (job_dirs(basetemp, spec)["2.5.0"] / "outputs.npz").is_file(), spec
        assert (job_dirs(basetemp, spec)["2.5.0"] / "inputs.npz").is_file(), spec
    assert "pytest-rknn: removed" not in result.stdout.str()


def test_under_xdist_each_worker_trims_the_folders_of_its_own_passed_items(run_pytest, pytester):
    (pytester.path / "cnn.onnx").write_bytes((MODELS / "cnn.onnx").read_bytes())
    write_spec(pytester.path, "good", PASSING)
    write_spec(pytester.path, "strict", FAILING)
    result, basetemp = run_pytest(str(pytester.path), "-n", "2")
    result.assert_outcomes(passed=1, failed=1)
    folders = {p.parent.name.rsplit("-", 1)[0]: p for p in basetemp.glob("popen-gw*/rknn/*/2.5.0")}
    assert sorted(folders) == ["good", "strict"]
    assert not (folders["good"] / "outputs.npz").exists() and (folders["good"] / "good.rknn").is_file()
    assert (folders["strict"] / "outputs.npz").is_file()


def test_a_bad_ini_value_is_a_usage_error_before_anything_runs(run_pytest, pytester):
    pytester.makeini("[pytest]\nrknn_keep_outputs = maybe\n")
    write_spec(pytester.path, "good", "model: missing.onnx\n")
    result, basetemp = run_pytest(str(pytester.path))
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*ini option rknn_keep_outputs*(write true or false)*"])
    assert not (basetemp / "rknn").exists()
