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


# What the real rknn-toolkit-lite2 2.5.0 wheel logs from init_runtime() on the arm64 test board
# (tests/board/README.md), one log per missing piece, as the runner's log.txt holds it. Only the
# rootfs prefix of the wheel's path is shortened. The two `E RKNN:` lines of NO_DRIVER come from
# the stand-in librknnrt.so, which prints what the real librknnrt 2.x prints (public board logs).
_LITE = "/usr/lib/python3/dist-packages/rknnlite/api/rknn_lite.py"
_NEW_RUNTIME = [
    "E Catch exception when init runtime!",
    "E Traceback (most recent call last):",
    f'  File "{_LITE}", line 168, in init_runtime',
    "    self.rknn_runtime = RKNNRuntime(root_dir=self.root_dir, target=target, device_id=device_id,",
    "                        ^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^^",
]
_STEPS = ["[pytest-rknn] step: sha256", "[pytest-rknn] step: import", "W rknn-toolkit-lite2 version: 2.5.0",
          "[pytest-rknn] step: load_rknn", "[pytest-rknn] step: init_runtime"]
NO_DRIVER = _STEPS + [
    "E RKNN: [14:03:38.511] failed to open rknpu module, need to insmod rknpu dirver!",
    "E RKNN: [14:03:38.511] failed to open rknn device!",
    "E Catch exception when init runtime!",
    "E Traceback (most recent call last):",
    f'  File "{_LITE}", line 177, in init_runtime',
    "    self.rknn_runtime.build_graph(self.rknn_data, self.load_model_in_npu, self.rknn_user_key)",
    '  File "rknnlite/api/rknn_runtime.py", line 965, in rknnlite.api.rknn_runtime.RKNNRuntime.build_graph',
    "Exception: RKNN init failed. error code: RKNN_ERR_FAIL",
]
NO_LIBRKNNRT = _STEPS + [
    "W **************************************************",
    "W !!! It is detected that /usr/lib/librknnrt.so is missing in the container.",
    "W !!! Please put it into /usr/lib/ directory.",
    "W !!! Or add the following parameters when running the container to map librknnrt.so in the host to the "
    "container.",
    "W ```",
    "W     -v /usr/lib/librknnrt.so:/usr/lib/librknnrt.so",
    "W ```",
    "W **************************************************",
] + _NEW_RUNTIME + [
    '  File "rknnlite/api/rknn_runtime.py", line 382, in rknnlite.api.rknn_runtime.RKNNRuntime.__init__',
    '  File "rknnlite/api/rknn_runtime.py", line 632, in rknnlite.api.rknn_runtime.RKNNRuntime._load_library',
    '  File "rknnlite/api/rknn_runtime.py", line 608, in '
    'rknnlite.api.rknn_runtime.RKNNRuntime._get_rknn_api_lib_path',
    "Exception: Can not find dynamic library on RK3588!",
    "Please download the librknnrt.so from https://github.com/airockchip/rknn-toolkit2/tree/master/rknpu2/runtime/"
    "Linux/librknn_api/aarch64 and move it to directory /usr/lib/",
]
NO_ROCKCHIP_DEVICE_TREE = _STEPS + _NEW_RUNTIME + [
    '  File "rknnlite/api/rknn_runtime.py", line 372, in rknnlite.api.rknn_runtime.RKNNRuntime.__init__',
    '  File "rknnlite/api/rknn_runtime.py", line 490, in rknnlite.api.rknn_runtime.RKNNRuntime._get_target_soc',
    "Exception: Please specify the target in init_runtime!",
]
CONTAINER_WITHOUT_DEVICES = _STEPS + [
    "**************************************************",
    "!!! It is detected that some necessary files are missing in the container.",
    "!!! When starting the container, please use the -v parameter to map the corresponding files in the host to "
    "the container.",
    "The reference parameters of run container are as follows:",
    "    -v /dev/dri/renderD129:/dev/dri/renderD129",
    "    -v /proc/device-tree/compatible:/proc/device-tree/compatible",
    "**************************************************",
] + _NEW_RUNTIME + [
    '  File "rknnlite/api/rknn_runtime.py", line 368, in rknnlite.api.rknn_runtime.RKNNRuntime.__init__',
    '  File "rknnlite/api/rknn_runtime.py", line 419, in rknnlite.api.rknn_runtime.RKNNRuntime._check_container',
    "RuntimeError",
]
# init_runtime(target="rk3588") on the board itself (the same wheel under qemu).
UNSUPPORTED_PLATFORM = _STEPS + _NEW_RUNTIME + [
    '  File "rknnlite/api/rknn_runtime.py", line 382, in rknnlite.api.rknn_runtime.RKNNRuntime.__init__',
    '  File "rknnlite/api/rknn_runtime.py", line 632, in rknnlite.api.rknn_runtime.RKNNRuntime._load_library',
    '  File "rknnlite/api/rknn_runtime.py", line 627, in '
    'rknnlite.api.rknn_runtime.RKNNRuntime._get_rknn_api_lib_path',
    "Exception: Unsupported run platform: Linux aarch64",
]
# librknnrt 1.1.0 without the driver aborts the process (public board log).
OLD_RUNTIME_ABORTS_WITHOUT_DRIVER = [
    "W rknn-toolkit-lite2 version: 2.2.0",
    "I RKNN: [08:21:53.965] RKNN Runtime Information: librknnrt version: 1.1.0 (8a9d6f66@2021-08-19T15:09:11)",
    "E RKNN: [08:21:53.967] failed to open rknpu module, need to insmod rknpu dirver!",
    "E RKNN: [08:21:53.967] failed to open rknn device!",
]
INIT_FAILED = {"status": "RUNTIME", "step": "init_runtime", "returncode": -1}
STANDIN_RUNTIME = "2.3.2 (429f97ae6b@2025-04-09T09:09:27)"  # what the stand-in librknnrt.so claims to be


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


@pytest.mark.parametrize("lines, said, fix", [
    (NO_DRIVER, "E RKNN: failed to open rknpu module, need to insmod rknpu dirver!",
     "load the rknpu driver (`dmesg | grep -i rknpu`) or use a board image that has it"),
    (NO_LIBRKNNRT, "Exception: Can not find dynamic library on RK3588!",
     "install librknnrt.so to /usr/lib from Rockchip's rknpu2 runtime"),
    (NO_ROCKCHIP_DEVICE_TREE, "Exception: Please specify the target in init_runtime!",
     "run on the board itself, not in a chroot or container without the board's /proc/device-tree"),
    (CONTAINER_WITHOUT_DEVICES, "!!! It is detected that some necessary files are missing in the container.",
     "-v /dev/dri/renderD129:/dev/dri/renderD129 -v /proc/device-tree/compatible:/proc/device-tree/compatible"),
    (UNSUPPORTED_PLATFORM, "Exception: Unsupported run platform: Linux aarch64",
     "only on the board's own Linux (aarch64 or armv7l), with init_runtime() given no target"),
], ids=["driver", "librknnrt", "device-tree", "container", "platform"])
def test_a_board_that_cannot_run_any_model_is_env_with_the_runtimes_line_and_the_fix(lines, said, fix):
    with pytest.raises(RknnError) as info:
        classify(session(), INIT_FAILED, lines)
    assert info.value.failure_class == ENV
    assert info.value.message.startswith(f"board 10.0.0.7: RKNNLite.init_runtime() returned -1: {said} (")
    assert fix in info.value.message and "older" not in info.value.message


def test_the_version_comparison_is_a_hint_added_to_the_runtimes_line_never_a_replacement():
    with pytest.raises(RknnError) as info:
        classify(session(STANDIN_RUNTIME), INIT_FAILED, NO_DRIVER)
    message = info.value.message
    assert info.value.failure_class == ENV
    assert message.startswith("board 10.0.0.7: RKNNLite.init_runtime() returned -1: E RKNN: failed to open rknpu "
                              "module, need to insmod rknpu dirver! (the NPU driver is not loaded")
    assert message.endswith(f"; librknnrt {STANDIN_RUNTIME} on the board is older than rknn-toolkit2 2.5.0 that "
                            f"built the model")
    assert "update the board runtime" not in message
    # An init_runtime failure the runtime does not explain: its own lines, and the versions as a hint.
    with pytest.raises(RknnError) as info:
        classify(session(STANDIN_RUNTIME), INIT_FAILED, ["E RKNN: [10:11:12.121] rknn_init, load model failed!"])
    assert (info.value.failure_class, info.value.message) == (BUILD, (
        f"board 10.0.0.7: RKNNLite.init_runtime() returned -1: E RKNN: rknn_init, load model failed!; librknnrt "
        f"{STANDIN_RUNTIME} on the board is older than rknn-toolkit2 2.5.0 that built the model"))


def test_an_unknown_runtime_version_is_never_printed_as_none():
    for lines in (NO_DRIVER, MODEL_TOO_NEW_FOR_1X_RUNTIME, ["E RKNN: [10:11:12.121] rknn_init, load model failed!"]):
        with pytest.raises(RknnError) as info:
            classify(session(None), INIT_FAILED, lines)
        assert "None" not in info.value.message, info.value.message
    with pytest.raises(RknnError) as info:
        classify(session(None), INIT_FAILED, MODEL_TOO_NEW_FOR_1X_RUNTIME)
    assert info.value.message.startswith("board 10.0.0.7: the board's librknnrt is older than rknn-toolkit2 2.5.0")


def test_a_traceback_gives_the_exceptions_last_line_as_the_reason():
    # The runner itself raised (no result.json): the reason is the exception, not the traceback's first line.
    lines = ["[pytest-rknn] step: inference", "Traceback (most recent call last):",
             '  File "/tmp/pytest-rknn.x/runner.py", line 201, in job',
             "    arrays = [data[f's{s}_i{i}'] for i in ...]",
             "KeyError: 's0_i1 is not a file in the archive'"]
    with pytest.raises(RknnError) as info:
        classify(session(), {"status": "ERROR", "step": "inference", "returncode": 1}, lines)
    assert (info.value.failure_class, info.value.message) == (BUILD, (
        "board 10.0.0.7: the runner failed during inference: KeyError: 's0_i1 is not a file in the archive'"))
    # init_runtime returned -1 after a traceback the runtime caught: its lines and the exception, no `E Traceback`.
    lines = ["E Catch exception when init runtime!", "E Traceback (most recent call last):",
             '  File "rknnlite/api/rknn_runtime.py", line 965, in rknnlite.api.rknn_runtime.RKNNRuntime.build_graph',
             "Exception: RKNN init failed. error code: RKNN_ERR_MODEL_INVALID"]
    with pytest.raises(RknnError) as info:
        classify(session(), INIT_FAILED, lines)
    assert info.value.message == ("board 10.0.0.7: RKNNLite.init_runtime() returned -1: E Catch exception when init "
                                  "runtime!; Exception: RKNN init failed. error code: RKNN_ERR_MODEL_INVALID")


def test_a_runtime_that_aborts_without_the_driver_is_env_with_the_driver_line():
    with pytest.raises(RknnError) as info:
        classify(session("1.1.0 (8a9d6f66@2021-08-19T15:09:11)"),
                 {"status": "CRASH", "signal": 6, "step": "init_runtime"}, OLD_RUNTIME_ABORTS_WITHOUT_DRIVER)
    assert info.value.failure_class == ENV
    assert info.value.message.startswith("board 10.0.0.7: runner killed by SIGABRT during init_runtime: E RKNN: "
                                         "failed to open rknpu module, need to insmod rknpu dirver! (")
