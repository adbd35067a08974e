"""How a board job's ending is classified, from the lines the real runtime writes. The lines are
librknnrt's and rknn-toolkit-lite2's own (RKNN-FACTS.md, public board logs), not the test
double's; the double is checked against the same lines in tests/board/test_testboard.py."""

import importlib.util

import pytest

from pytest_rknn.board.classify import classify as board_classify
from pytest_rknn.board.connection import BoardAddress, SshSettings
from pytest_rknn.board.preflight import BoardInfo
from pytest_rknn.board.session import RUNNER, BoardSession
from pytest_rknn.errors import BUILD, CRASH, ENV, TIMEOUT, RknnError

# A 2.x librknnrt older than the toolkit: it warns, then runs the model.
MODEL_NEWER_THAN_2X_RUNTIME = [
    "I RKNN: [10:11:12.120] RKNN Runtime Information, librknnrt version: 2.3.0 (c949ad889d@2024-11-07T11:35:33)",
    "I RKNN: [10:11:12.121] RKNN Driver Information, version: 0.9.8",
    "W RKNN: [10:11:12.122] RKNN Model version: 2.5.0 not match with rknn runtime version: 2.3.0",
]
# A librknnrt before 1.5.2 and a model of version 6: rknn_init fails.
MODEL_TOO_NEW_FOR_1X_RUNTIME = [
    "I RKNN: [10:11:12.120] RKNN Runtime Information: librknnrt version: 1.4.0 (a10f100eb@2022-09-09T09:07:14)",
    "E RKNN: [10:11:12.121] 6, 1",
    "E RKNN: [10:11:12.121] Invalid RKNN model version 6",
    "E RKNN: [10:11:12.121] rknn_init, load model failed!",
    "E Catch exception when init runtime!",
    "E Traceback (most recent call last):",
    "Exception: RKNN init failed. error code: RKNN_ERR_FAIL",
]
# What the real lite2 logs when inference() returns None after a failed rknn_run.
SUBMIT_FAILED = [
    "E RKNN: [10:11:12.300] failed to submit!, op id: 1, op name: Conv:conv1, flags: 0x5, task start: 0, "
    "task number: 12, run task counter: 0, int status: 0",
    "E Catch exception when getting outputs.",
]


def session(librknnrt="2.5.0 (0000000000@2026-01-01T00:00:00)"):
    board = BoardSession(BoardAddress("10.0.0.7"), SshSettings())
    board.info = BoardInfo(address="10.0.0.7", librknnrt=librknnrt)
    return board


def classify(board, result, lines, toolkit="2.5.0"):
    return board_classify(board.where, board.info, result, lines, toolkit)


def test_an_older_2_x_runtime_passes_with_a_warning_that_quotes_its_line():
    result = classify(session("2.3.0 (c949ad889d@2024-11-07T11:35:33)"), {"status": "ok"}, MODEL_NEWER_THAN_2X_RUNTIME)
    assert result["warnings"] == [
        "board 10.0.0.7: librknnrt 2.3.0 (c949ad889d@2024-11-07T11:35:33) is older than rknn-toolkit2 2.5.0 that "
        "built the model (W RKNN: [10:11:12.122] RKNN Model version: 2.5.0 not match with rknn runtime version: 2.3.0)"]
    assert "warnings" not in classify(session(), {"status": "ok"}, [])  # the same version says nothing


def test_a_1_x_runtime_that_cannot_read_the_model_is_env_with_its_own_line():
    with pytest.raises(RknnError) as info:
        classify(session("1.4.0 (a10f100eb@2022-09-09T09:07:14)"),
                 {"status": "RUNTIME", "step": "init_runtime", "returncode": -1}, MODEL_TOO_NEW_FOR_1X_RUNTIME)
    assert info.value.failure_class == ENV
    assert info.value.message == (
        "board 10.0.0.7: librknnrt 1.4.0 (a10f100eb@2022-09-09T09:07:14) is older than rknn-toolkit2 2.5.0 that built "
        "the model; RKNNLite.init_runtime() returned -1: E RKNN: Invalid RKNN model version 6 (update the board runtime "
        "or build with an older toolkit)")
    assert "Invalid RKNN model version 6" in info.value.log_tail


def test_the_runtimes_line_decides_even_when_the_version_is_unknown():
    with pytest.raises(RknnError) as info:
        classify(session(None), {"status": "RUNTIME", "step": "init_runtime", "returncode": -1},
                 MODEL_TOO_NEW_FOR_1X_RUNTIME)
    assert info.value.failure_class == ENV and "Invalid RKNN model version 6" in info.value.message


def test_other_endings_get_their_class_and_the_runtimes_words():
    board = session()
    cases = [
        ({"status": "RUNTIME", "step": "load_rknn", "returncode": -1}, ["E Invalid RKNN model path: /x.rknn"], BUILD,
         "board 10.0.0.7: RKNNLite.load_rknn() returned -1: E Invalid RKNN model path: /x.rknn"),
        ({"status": "CRASH", "signal": 11, "step": "inference"}, SUBMIT_FAILED, CRASH,
         "board 10.0.0.7: runner killed by SIGSEGV during inference: E RKNN: failed to submit!"),
        ({"status": "TIMEOUT", "seconds": 5, "step": "inference"}, [], TIMEOUT,
         "board 10.0.0.7: no result after 5 s, during inference; runner process group killed"),
        ({"status": "SHA256", "found": "ab" * 32}, [], ENV,
         "board 10.0.0.7: the uploaded .rknn has sha256 abababababab..., not the built one"),
        ({"status": "ERROR", "step": "import", "returncode": 1}, ["ModuleNotFoundError: No module named 'rknnlite'"],
         ENV, "board 10.0.0.7: the runner failed during import: ModuleNotFoundError: No module named 'rknnlite'"),
    ]
    for result, lines, failure_class, start in cases:
        with pytest.raises(RknnError) as info:
            classify(board, result, lines)
        assert (info.value.failure_class, info.value.message[:len(start)]) == (failure_class, start), result


def _runner():
    spec = importlib.util.spec_from_file_location("remote_runner", RUNNER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_preflight_reads_versions_in_the_formats_boards_have(tmp_path, monkeypatch):
    runner = _runner()
    library = tmp_path / "librknnrt.so"  # as `strings librknnrt.so` finds it in the real library
    library.write_bytes(b"\x7fELF\x02\x01\x01" + b"\0" * 40 + b"librknnrt version: 2.3.2 (429f97ae6b@2025-04-09T09:09:27)"
                        + b"\0" + b"\x90" * 16)
    driver = tmp_path / "version"
    driver.write_text("RKNPU driver: v0.9.8\n")  # /sys/kernel/debug/rknpu/version
    monkeypatch.setenv("RKNN_BOARD_LIBRKNNRT", str(library))
    monkeypatch.setenv("RKNN_BOARD_DRIVER_VERSION_FILE", str(driver))
    assert runner.librknnrt_version() == "2.3.2 (429f97ae6b@2025-04-09T09:09:27)"
    assert runner.driver_version() == "0.9.8"
    tree = tmp_path / "device-tree"
    tree.mkdir()
    (tree / "compatible").write_bytes(b"radxa,rock-5b\0rockchip,rk3588\0")
    (tree / "model").write_bytes(b"Radxa ROCK 5B\0")
    monkeypatch.setattr(runner, "DEVICE_TREE", str(tree))
    assert runner.soc() == {"soc": "rk3588", "compatible": ["radxa,rock-5b", "rockchip,rk3588"],
                            "model": "Radxa ROCK 5B"}
