"""pytest-rknn against the arm64 test board (arm64board.py): the real rknn-toolkit-lite2 2.5.0 wheel
and Debian's arm64 Python under qemu-user, behind the loopback sshd. The board has no NPU, so each
run ends in init_runtime(), the way a real RK3588 board ends when one piece is missing; what is
checked is that the plugin turns the runtime's own line into one ENV line with the fix. The only
stand-in is librknnrt.so (tests/board/README.md, "The arm64 board"). Outputs are the double's job
(tests/test_board_e2e.py)."""

import json
import re
import shutil
import time
from pathlib import Path

import pytest

from conftest import MODELS, TOOLKIT_CACHE, write_spec

from .arm64board import BoardBuildError, ensure_base, make_board_python

STANDIN_RUNTIME = "2.3.2 (429f97ae6b@2025-04-09T09:09:27)"
FAILURE_LINE = re.compile(r"^\[([A-Z]+)\] (\S+): (.*)$", re.M)  # the first line of a failed item's report

# personality: (what the board has, the runtime's line, a part of the fix the line must give)
PIECES = {
    "no-driver": ({}, "E RKNN: failed to open rknpu module, need to insmod rknpu dirver!",
                  "load the rknpu driver (`dmesg | grep -i rknpu`) or use a board image that has it"),
    "no-librknnrt": ({"librknnrt": False}, "Exception: Can not find dynamic library on RK3588!",
                     "install librknnrt.so to /usr/lib from Rockchip's rknpu2 runtime"),
    # The board is a container to lite2 (arm64board.py), so its device tree is there but names no
    # Rockchip SoC: the same raise in lite2 as a board without /proc/device-tree/compatible.
    "no-rockchip-device-tree": ({"device_tree": ("raspberrypi,4-model-b", "brcm,bcm2711")},
                                "Exception: Please specify the target in init_runtime!",
                                "run on the board itself, not in a chroot or container without the board's "
                                "/proc/device-tree"),
    "container-without-devices": ({"device_tree": None, "librknnrt": False, "npu_device": False},
                                  "!!! It is detected that some necessary files are missing in the container.",
                                  "start the container with the NPU device and the device tree: -v "
                                  "/dev/dri/renderD129:/dev/dri/renderD129 -v "
                                  "/proc/device-tree/compatible:/proc/device-tree/compatible, or run on the board "
                                  "itself"),
}


@pytest.fixture(scope="session")
def arm64_base():
    """The cached arm64 rootfs with the real wheel (built by .ci/setup, or here when missing)."""
    try:
        return ensure_base(TOOLKIT_CACHE)
    except BoardBuildError as exc:
        pytest.fail(str(exc), pytrace=False)


def run_on_arm64_board(board_pytest, pytester, tmp_path, base, name, has):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    python = make_board_python(tmp_path / "arm64", base, name, **has)
    report = tmp_path / "report.json"
    result, _ = board_pytest(f"--rknn-json={report}", python=str(python), register=False)
    return result, json.loads(report.read_text()), python.parent / "root"


def assert_nothing_left(board_pytest, root: Path):
    """No runner process of this personality, no remote work dir."""
    deadline = time.monotonic() + 10
    while _processes_under(root) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _processes_under(root) == []
    assert list(board_pytest.remote_parent.iterdir()) == []


def _processes_under(root: Path):
    found = []
    for entry in Path("/proc").iterdir():
        try:
            command = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if str(root) in command:
            found.append(command)
    return found


@pytest.mark.parametrize("name", PIECES)
def test_a_missing_piece_of_the_real_runtime_is_one_env_line_quoting_it(board_pytest, test_board, pytester,
                                                                         tmp_path, arm64_base, name):
    has, said, fix = PIECES[name]
    result, report, root = run_on_arm64_board(board_pytest, pytester, tmp_path, arm64_base, name, has)
    result.assert_outcomes(passed=1, failed=1)  # the simulator item passes
    failed = {item: (failure_class, line) for failure_class, item, line in FAILURE_LINE.findall(result.stdout.str())}
    assert list(failed) == ["cnn[2.5.0-board]"], result.stdout.str()[-3000:]
    failure_class, line = failed["cnn[2.5.0-board]"]
    assert failure_class == "ENV"
    assert line.startswith(f"board 127.0.0.1:{test_board.port}: RKNNLite.init_runtime() returned -1: {said} (")
    assert fix in line
    # The version heuristic is only a hint: the stand-in librknnrt claims 2.3.2, older than the toolkit.
    if has.get("librknnrt", True):
        assert line.endswith(f"; librknnrt {STANDIN_RUNTIME} on the board is older than rknn-toolkit2 2.5.0 that "
                             f"built the model")
    else:
        assert "older" not in line
    # It was the real wheel, in the arm64 rootfs, that said it; the log tail is in the report.
    tail = next(item for item in report["items"] if item["backend"] == "board")["log_tail"]
    assert "W rknn-toolkit-lite2 version: 2.5.0" in tail
    assert f'File "{arm64_base}/rootfs/usr/lib/python3/dist-packages/rknnlite/api/rknn_lite.py", line' in tail
    assert_nothing_left(board_pytest, root)

