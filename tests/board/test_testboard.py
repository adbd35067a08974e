"""Self-tests of the test board, not of pytest-rknn: sshd on loopback, paramiko, SFTP, and the
rknnlite double running a .rknn file built by the real rknn-toolkit2 2.5.0. They check that the
stand-in behaves like the real thing (tests/board/README.md), so the plugin's board tests in
tests/test_board_e2e.py can trust it. No pytest_rknn code runs here but the registrar hook."""

import json
import os
import re
import secrets
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import onnxruntime
import paramiko
import pytest

from conftest import MODELS
from test_board_classify import MODEL_NEWER_THAN_2X_RUNTIME, MODEL_TOO_NEW_FOR_1X_RUNTIME
from pytest_rknn.spec import spec_from_dict
from pytest_rknn.toolkit.envs import Provisioner, ToolkitRequest

from .registrar import pytest_rknn_artifact_built
from .testboard import start_test_board

CNN = MODELS / "cnn.onnx"
BUILD_CNN = """
import sys
from rknn.api import RKNN
rknn = RKNN()
assert rknn.config(mean_values=[[0, 0, 0]], std_values=[[255, 255, 255]], target_platform="rk3588") == 0
assert rknn.load_onnx(model=sys.argv[1]) == 0
assert rknn.build(do_quantization=False) == 0
assert rknn.export_rknn(sys.argv[2]) == 0
"""
# Runs on the board: prints its pid, then one RESULT line; outputs go to out.npz.
JOB = """
import json, os, sys
import numpy as np
from rknnlite.api import RKNNLite
print("PID", os.getpid(), flush=True)
lite = RKNNLite()
result = {"load_rknn": lite.load_rknn(sys.argv[1])}
if result["load_rknn"] == 0:
    result["init_runtime"] = lite.init_runtime(core_mask=RKNNLite.NPU_CORE_AUTO)
    if result["init_runtime"] == 0:
        outputs = lite.inference(inputs=[np.load("input.npy")])
        result["outputs"] = None if outputs is None else [list(o.shape) for o in outputs]
        if outputs is not None:
            np.savez("out.npz", *outputs)
        result["sdk"] = lite.get_sdk_version()
lite.release()
print("RESULT " + json.dumps(result), flush=True)
"""


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    board = start_test_board(tmp_path_factory.mktemp("testboard"))
    yield board
    board.stop()


def connect(board, known_hosts: Path) -> paramiko.SSHClient:
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    client.connect(board.host, port=board.port, username=board.user, key_filename=str(board.key_path),
                   look_for_keys=False, allow_agent=False, timeout=10, banner_timeout=10, auth_timeout=10)
    return client


@pytest.fixture(scope="module")
def ssh(board, tmp_path_factory):
    known_hosts = tmp_path_factory.mktemp("ssh") / "known_hosts"
    known_hosts.write_text(board.host_key_line + "\n")
    client = connect(board, known_hosts)
    yield client
    client.close()


def run(ssh, command, timeout=60.0):
    """(exit status, stdout+stderr) of `command` on the board, bounded by `timeout`."""
    _, stdout, _ = ssh.exec_command(f"( {command}\n) 2>&1", timeout=timeout)
    output = stdout.read().decode(errors="replace")
    return stdout.channel.recv_exit_status(), output


@pytest.fixture(scope="module")
def cnn_rknn(tmp_path_factory, toolkit_cache):
    """fixtures/models/cnn.onnx built by the real rknn-toolkit2 2.5.0: fp16, mean 0, std 255."""
    python = Provisioner(toolkit_cache).python_for(ToolkitRequest("2.5.0"))
    folder = tmp_path_factory.mktemp("rknn")
    path = folder / "cnn.rknn"
    done = subprocess.run([python, "-c", BUILD_CNN, str(CNN), str(path)], capture_output=True, text=True,
                          timeout=300, stdin=subprocess.DEVNULL)
    assert done.returncode == 0 and path.is_file(), done.stderr[-3000:]
    return path


@pytest.fixture(scope="module")
def registered(board, cnn_rknn):
    import hashlib

    sha = hashlib.sha256(cnn_rknn.read_bytes()).hexdigest()
    board.register(sha, CNN, mean_values=[[0, 0, 0]], std_values=[[255, 255, 255]], apply_mean_std=True,
                   toolkit_version="2.5.0", target_platform="rk3588")
    return cnn_rknn


IMAGE = np.random.default_rng(0).integers(0, 256, (1, 32, 32, 3)).astype(np.uint8)  # NHWC, as on a board


def run_job(ssh, board, rknn: Path, name: str = None, python: Path = None, tmp_path: Path = None, wait=True):
    """Upload `rknn` (as `name`), the job script and the input to a fresh remote dir over SFTP and
    run the job with the board Python. Returns (status, output, remote dir) or, with wait=False,
    (channel, remote dir)."""
    remote = tmp_path / f"pytest-rknn.{secrets.token_hex(4)}"
    sftp = ssh.open_sftp()
    try:
        sftp.mkdir(str(remote), 0o700)
        sftp.put(str(rknn), str(remote / (name or rknn.name)))
        with sftp.open(str(remote / "job.py"), "w") as handle:
            handle.write(JOB)
        local_input = tmp_path / "input.npy"
        np.save(local_input, IMAGE)
        sftp.put(str(local_input), str(remote / "input.npy"))
    finally:
        sftp.close()
    command = (f"cd {shlex.quote(str(remote))} && {shlex.quote(str(python or board.python))} job.py "
               f"{shlex.quote(name or rknn.name)}; echo EXIT=$?")
    if not wait:
        _, stdout, _ = ssh.exec_command(f"( {command}\n) 2>&1", timeout=30)
        return stdout, remote
    status, output = run(ssh, command)
    return status, output, remote


def without_timestamps(lines):
    return [re.sub(r"\[\d\d:\d\d:\d\d\.\d{3}\] ", "", line) for line in lines]


def assert_says(output, real_lines):
    """The double wrote the real runtime's lines, in order (timestamps aside)."""
    said = without_timestamps(output.splitlines())
    positions = [said.index(line) for line in without_timestamps(real_lines) if line in said]
    assert len(positions) == len(real_lines) and positions == sorted(positions), (real_lines, output)


def job_result(output):
    found = re.search(r"^RESULT (.*)$", output, re.M)
    assert found, output
    return json.loads(found.group(1))


def cosine(a, b):
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# ---------------------------------------------------------------- ssh


def test_a_command_runs_over_ssh_with_the_known_host_key(ssh):
    assert run(ssh, "echo ok") == (0, "ok\n")


def test_a_key_the_board_does_not_authorise_is_refused(board, tmp_path):
    stranger = board.make_user_key(tmp_path / "stranger")
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(board.host_key_line + "\n")
    client = paramiko.SSHClient()
    client.load_host_keys(str(known_hosts))
    client.set_missing_host_key_policy(paramiko.RejectPolicy())
    with pytest.raises(paramiko.AuthenticationException):
        client.connect(board.host, port=board.port, username=board.user, key_filename=str(stranger),
                       look_for_keys=False, allow_agent=False, timeout=10)
    client.close()


def test_a_wrong_host_key_is_refused(board, tmp_path):
    other = tmp_path / "other_key"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True, timeout=30)
    kind, key = (tmp_path / "other_key.pub").read_text().split()[:2]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(f"[{board.host}]:{board.port} {kind} {key}\n")
    with pytest.raises(paramiko.BadHostKeyException):
        connect(board, known_hosts)


def test_an_unknown_host_is_refused_by_the_reject_policy(board, tmp_path):
    (tmp_path / "known_hosts").write_text("")
    with pytest.raises(paramiko.SSHException, match="not found in known_hosts"):
        connect(board, tmp_path / "known_hosts")


def test_sftp_puts_and_gets_files(ssh, tmp_path):
    local = tmp_path / "data.bin"
    local.write_bytes(bytes(range(256)) * 64)
    remote = tmp_path / "remote dir"
    sftp = ssh.open_sftp()
    try:
        sftp.mkdir(str(remote))
        sftp.put(str(local), str(remote / "data.bin"))
        assert sftp.stat(str(remote / "data.bin")).st_size == 256 * 64
        sftp.get(str(remote / "data.bin"), str(tmp_path / "back.bin"))
    finally:
        sftp.close()
    assert (tmp_path / "back.bin").read_bytes() == local.read_bytes()


def test_a_port_without_sftp_refuses_the_subsystem_and_a_powered_off_port_answers_nothing(board, tmp_path):
    bare = board.listen(sftp=False)
    try:
        known_hosts = tmp_path / "known_hosts"
        known_hosts.write_text(board.host_key_line + "\n")
        client = paramiko.SSHClient()
        client.load_host_keys(str(known_hosts))
        client.connect(board.host, port=bare.port, username=board.user, key_filename=str(board.key_path),
                       look_for_keys=False, allow_agent=False, timeout=10)
        try:
            assert run(client, "echo ok") == (0, "ok\n")
            with pytest.raises(paramiko.SSHException):
                client.open_sftp()
            assert client.get_transport().is_active()
        finally:
            client.close()
        bare.power_off_marker.touch()  # what the power_off fault does
        with pytest.raises((paramiko.SSHException, EOFError, OSError)):
            paramiko.SSHClient().connect(board.host, port=bare.port, timeout=5, banner_timeout=5,
                                         look_for_keys=False, allow_agent=False)
        assert bare.accepted == 1
    finally:
        bare.stop()
        board.listeners.remove(bare)
    assert not bare.power_off_marker.exists()


def test_the_board_python_looks_like_an_rk3588_with_rknnlite(ssh, board):
    status, output = run(ssh, f"{shlex.quote(str(board.python))} -c 'import importlib.metadata as m, "
                              f"rknnlite.api; print(m.version(\"rknn-toolkit-lite2\"))'; "
                              f"cat \"$RKNN_BOARD_DEVICE_TREE/compatible\" 2>/dev/null | tr '\\0' ' '")
    assert status == 0 and output.startswith("2.5.0\n"), output
    tree = board.folder / "default" / "device-tree"
    assert (tree / "compatible").read_bytes() == b"rockchip,rk3588-evb1-lp4-v10\0rockchip,rk3588\0"
    assert b"librknnrt version: 2.5.0 (" in (board.folder / "default" / "librknnrt.so").read_bytes()
    assert f"RKNN_BOARD_DEVICE_TREE={tree}" in board.python.read_text()


# ---------------------------------------------------------------- the double


def test_a_registered_rknn_gives_the_onnx_outputs_through_fp16(ssh, board, registered, tmp_path):
    status, output, remote = run_job(ssh, board, registered, tmp_path=tmp_path)
    assert status == 0 and "EXIT=0" in output, output
    result = job_result(output)
    assert result["load_rknn"] == 0 and result["init_runtime"] == 0, output
    assert result["outputs"] == [[1, 10], [1, 16, 8, 8]]
    assert re.search(r"^I RKNN: \[\d\d:\d\d:\d\d\.\d{3}\] RKNN Runtime Information, librknnrt version: 2\.5\.0 \(",
                     output, re.M), output
    assert "RKNN Driver Information, version: 0.9.8" in output
    assert re.search(r"RKNN Model Information, version: 6, toolkit version: 2\.5\.0\(compiler version: 2\.5\.0 "
                     r"\(.+\)\), target: RKNPU v2, target platform: rk3588", output), output
    assert "W rknn-toolkit-lite2 version: 2.5.0" in output
    assert "API: 2.5.0" in result["sdk"] and "DRV: 0.9.8" in result["sdk"]
    with np.load(remote / "out.npz") as data:
        board_outputs = [data["arr_0"], data["arr_1"]]
    session = onnxruntime.InferenceSession(str(CNN), providers=["CPUExecutionProvider"])
    reference = session.run(None, {"images": IMAGE.transpose(0, 3, 1, 2).astype(np.float32) / 255})
    for got, want in zip(board_outputs, reference):
        assert got.dtype == np.float32 and got.shape == want.shape
        assert cosine(got, want) > 0.999
        assert np.array_equal(got, got.astype(np.float16).astype(np.float32))  # fp16 values


def test_a_model_registered_with_its_simulator_folder_gives_the_simulators_outputs(ssh, board, registered, tmp_path):
    """As a board does, which runs the arithmetic the simulator emulates; other inputs still go
    through onnxruntime."""
    import hashlib

    simulated = tmp_path / "simulated"
    simulated.mkdir()
    rng = np.random.default_rng(1)
    outputs = [rng.standard_normal((1, 10)).astype(np.float32), rng.standard_normal((1, 16, 8, 8)).astype(np.float32)]
    np.savez(simulated / "inputs.npz", s0_i0=255 - IMAGE, s1_i0=IMAGE)
    np.savez(simulated / "outputs.npz", s0_o0=outputs[0] * 0, s0_o1=outputs[1] * 0, s1_o0=outputs[0], s1_o1=outputs[1])
    built = tmp_path / "built.rknn"
    built.write_bytes(registered.read_bytes() + b"built")  # a build of its own, with its own sha256
    board.register(hashlib.sha256(built.read_bytes()).hexdigest(), CNN, mean_values=[[0, 0, 0]],
                   std_values=[[255, 255, 255]], simulated=simulated)
    status, output, remote = run_job(ssh, board, built, tmp_path=tmp_path)
    assert status == 0 and job_result(output)["outputs"] == [[1, 10], [1, 16, 8, 8]], output
    with np.load(remote / "out.npz") as data:
        assert all(np.array_equal(data[f"arr_{k}"], want) for k, want in enumerate(outputs))
    np.savez(simulated / "inputs.npz", s0_i0=255 - IMAGE)  # the job's input is not among them
    status, output, remote = run_job(ssh, board, built, tmp_path=tmp_path)
    with np.load(remote / "out.npz") as data:
        assert cosine(data["arr_0"], outputs[0]) < 0.9 and not np.array_equal(data["arr_0"], 0 * outputs[0])


def test_an_unregistered_rknn_loads_but_the_runtime_refuses_it(ssh, board, registered, tmp_path):
    other = tmp_path / "other.rknn"
    other.write_bytes(registered.read_bytes() + b"\0")  # another sha256
    status, output, _ = run_job(ssh, board, other, tmp_path=tmp_path)
    result = job_result(output)
    # As in rknn-toolkit-lite2: load_rknn only reads the file; rknn_init rejects it.
    assert result == {"load_rknn": 0, "init_runtime": -1}, output
    assert re.search(r"^E RKNN: \[.*\] parseRKNN from buffer: Invalid RKNN format!$", output, re.M), output
    assert "E Catch exception when init runtime!" in output
    assert "Exception: RKNN init failed. error code: RKNN_ERR_MODEL_INVALID" in output


def test_a_missing_rknn_file_fails_load_rknn(ssh, board, tmp_path):
    status, output = run(ssh, f"{shlex.quote(str(board.python))} -c 'from rknnlite.api import RKNNLite; "
                              f"print(RKNNLite().load_rknn(\"/nonexistent.rknn\"))'")
    assert output.splitlines()[-2:] == ["E Invalid RKNN model path: /nonexistent.rknn", "-1"], output


def test_segv_kills_the_board_process_with_signal_11(ssh, board, registered, tmp_path):
    board.set_fault("segv.rknn", "segv")
    status, output, _ = run_job(ssh, board, registered, name="segv.rknn", tmp_path=tmp_path)
    assert "RESULT" not in output and "EXIT=139" in output, output  # 128 + SIGSEGV


def test_hang_keeps_inference_running_until_killed(ssh, board, registered, tmp_path):
    board.set_fault("hang.rknn", "hang")
    stdout, remote = run_job(ssh, board, registered, name="hang.rknn", tmp_path=tmp_path, wait=False)
    pid = int(stdout.readline().split()[1])
    time.sleep(2)
    assert not stdout.channel.exit_status_ready()
    assert Path(f"/proc/{pid}").exists()
    assert any(str(remote) in command for command in board.leftover_processes())  # the remote shell
    assert run(ssh, f"kill -KILL {pid}")[0] == 0
    rest = stdout.read().decode()
    assert "RESULT" not in rest and "EXIT=137" in rest, rest
    deadline = time.monotonic() + 10
    while board.leftover_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert board.leftover_processes() == []


def test_none_outputs_returns_none_with_an_error_line(ssh, board, registered, tmp_path):
    board.set_fault("none_outputs.rknn", "none_outputs")
    status, output, _ = run_job(ssh, board, registered, name="none_outputs.rknn", tmp_path=tmp_path)
    assert job_result(output)["outputs"] is None, output
    assert re.search(r"^E RKNN: \[.*\] failed to submit!", output, re.M), output
    assert "E Catch exception when getting outputs." in output


def test_wrong_shape_returns_an_output_of_another_shape(ssh, board, registered, tmp_path):
    board.set_fault("wrong_shape.rknn", "wrong_shape")
    status, output, _ = run_job(ssh, board, registered, name="wrong_shape.rknn", tmp_path=tmp_path)
    assert job_result(output)["outputs"] == [[1, 9], [1, 16, 8, 8]], output


def test_scale_halves_every_output_and_the_trace_says_what_arrived(ssh, board, registered, tmp_path):
    import hashlib

    status, output, plain = run_job(ssh, board, registered, name="plain.rknn", tmp_path=tmp_path)
    board.set_fault("scaled.rknn", "scale")
    status, output, scaled = run_job(ssh, board, registered, name="scaled.rknn", tmp_path=tmp_path)
    with np.load(plain / "out.npz") as a, np.load(scaled / "out.npz") as b:
        for name in a.files:
            np.testing.assert_array_equal(b[name], a[name] * np.float32(0.5))
    sha = hashlib.sha256(registered.read_bytes()).hexdigest()
    calls = [c for c in board.default.calls() if c["event"] == "rknn_init"][-2:]
    assert [(c["sha256"], c["core_mask"], c["ssh_port"], c["fault"]) for c in calls] == [
        (sha, 0, board.port, None), (sha, 0, board.port, "scale")]


def test_hang_child_leaves_a_helper_in_the_job_process_group(ssh, board, registered, tmp_path):
    board.set_fault("hang_child.rknn", "hang_child")
    stdout, remote = run_job(ssh, board, registered, name="hang_child.rknn", tmp_path=tmp_path, wait=False)
    pid = int(stdout.readline().split()[1])
    deadline = time.monotonic() + 30
    while not [c for c in board.default.calls() if c["event"] == "helper" and c["pid"] == pid]:
        assert time.monotonic() < deadline, "no helper started"
        time.sleep(0.1)
    helper = next(c["helper_pid"] for c in board.default.calls() if c["event"] == "helper" and c["pid"] == pid)
    assert os.getpgid(helper) == os.getpgid(pid)
    assert run(ssh, f"kill -KILL -- -{os.getpgid(pid)}")[0] == 0
    assert "RESULT" not in stdout.read().decode()
    deadline = time.monotonic() + 10
    while board.leftover_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert board.leftover_processes() == []


def test_an_op_fault_crashes_any_model_that_has_the_op_and_only_those(ssh, board, registered, tmp_path):
    try:
        board.set_op_fault("TopK", "segv")  # cnn has none
        status, output, _ = run_job(ssh, board, registered, name="any_name.rknn", tmp_path=tmp_path)
        assert job_result(output)["outputs"] == [[1, 10], [1, 16, 8, 8]], output
        board.set_op_fault("MaxPool", "segv")  # cnn has one
        status, output, _ = run_job(ssh, board, registered, name="other_name.rknn", tmp_path=tmp_path)
        assert "RESULT" not in output and "EXIT=139" in output, output
        with pytest.raises(ValueError):
            board.set_op_fault("MaxPool", "melt")
    finally:
        board.clear_faults()
    assert "op_faults" not in json.loads(board.registry.read_text())


def test_faults_go_with_the_file_name_and_can_be_cleared(ssh, board, registered, tmp_path):
    board.set_fault("gone.rknn", "none_outputs")
    board.clear_faults()
    assert json.loads(board.registry.read_text())["faults"] == {}
    status, output, _ = run_job(ssh, board, registered, name="gone.rknn", tmp_path=tmp_path)
    assert job_result(output)["outputs"] == [[1, 10], [1, 16, 8, 8]], output
    with pytest.raises(ValueError):
        board.set_fault("x.rknn", "melt")


# ---------------------------------------------------------------- personalities


def test_a_1_x_runtime_cannot_read_the_model_and_init_runtime_fails(ssh, board, registered, tmp_path):
    old = board.make_python("rt140", runtime_version="1.4.0", registry=board.registry).python
    status, output, _ = run_job(ssh, board, registered, python=old, tmp_path=tmp_path)
    assert job_result(output) == {"load_rknn": 0, "init_runtime": -1}, output
    assert_says(output, MODEL_TOO_NEW_FOR_1X_RUNTIME)


def test_an_older_2_x_runtime_warns_and_runs_the_model_as_the_real_one_does(ssh, board, registered, tmp_path):
    old = board.make_python("rt230", runtime_version="2.3.0", registry=board.registry).python
    assert b"librknnrt version: 2.3.0 (c949ad889d@2024-11-07T11:35:33)" in \
        (board.folder / "rt230" / "librknnrt.so").read_bytes()
    status, output, _ = run_job(ssh, board, registered, python=old, tmp_path=tmp_path)
    result = job_result(output)
    assert result["init_runtime"] == 0 and result["outputs"] == [[1, 10], [1, 16, 8, 8]], output
    assert_says(output, MODEL_NEWER_THAN_2X_RUNTIME)


def test_a_board_of_another_soc_refuses_the_model(ssh, board, registered, tmp_path):
    rk3568 = board.make_python("rk3568", soc="rk3568", registry=board.registry).python
    status, output, _ = run_job(ssh, board, registered, python=rk3568, tmp_path=tmp_path)
    assert job_result(output) == {"load_rknn": 0, "init_runtime": -1}, output
    assert re.search(r"^E RKNN: \[.*\] This rknn model is for RK3588, but current platform is RK3568$",
                     output, re.M), output


def test_a_board_without_the_npu_device_fails_init_runtime(ssh, board, registered, tmp_path):
    no_npu = board.make_python("no-npu", npu=False, registry=board.registry).python
    status, output, _ = run_job(ssh, board, registered, python=no_npu, tmp_path=tmp_path)
    assert job_result(output) == {"load_rknn": 0, "init_runtime": -1}, output
    assert "failed to open rknpu module, need to insmod rknpu dirver!" in output


def test_core_masks_are_checked_like_the_real_runtime(ssh, board, registered, tmp_path):
    script = (f"from rknnlite.api import RKNNLite\n"
              f"for mask in (RKNNLite.NPU_CORE_0_1_2, RKNNLite.NPU_CORE_ALL, 5):\n"
              f"    lite = RKNNLite()\n"
              f"    assert lite.load_rknn({str(registered)!r}) == 0\n"
              f"    print('MASK', mask, lite.init_runtime(core_mask=mask), flush=True)\n")
    status, output = run(ssh, f"{shlex.quote(str(board.python))} -c {shlex.quote(script)}")
    assert re.findall(r"^MASK (\d+) (-?\d)$", output, re.M) == [("7", "0"), ("65535", "0"), ("5", "-1")], output
    assert "E Catch exception when set npu core mode." in output


# ---------------------------------------------------------------- registry, processes


REGISTER_MANY = """
import sys
from registrar import update_registry
for i in range(20):
    update_registry(sys.argv[1], lambda data, i=i: data["models"].__setitem__(sys.argv[2] + str(i), {"onnx": "x"}))
"""


def test_concurrent_registry_writers_lose_nothing(tmp_path):
    registry = tmp_path / "registry.json"
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent)}  # as `-p registrar` finds it
    writers = [subprocess.Popen([sys.executable, "-c", REGISTER_MANY, str(registry), f"w{w}-"], env=env)
               for w in range(6)]
    assert [writer.wait(timeout=60) for writer in writers] == [0] * 6
    assert len(json.loads(registry.read_text())["models"]) == 6 * 20


def test_the_registrar_hook_registers_a_built_artifact(tmp_path, monkeypatch):
    spec = spec_from_dict({"model": str(CNN), "target": "rk3588",
                           "convert": {"mean_values": [0, 0, 0], "std_values": [255, 255, 255]}},
                          base_dir=tmp_path, name="cnn")
    monkeypatch.setenv("RKNNLITE_DOUBLE_REGISTRY", str(tmp_path / "registry.json"))
    pytest_rknn_artifact_built(spec=spec, version="2.5.0", rknn_path=tmp_path / "cnn.rknn", sha256="ab" * 32)
    entry = json.loads((tmp_path / "registry.json").read_text())["models"]["ab" * 32]
    assert entry == {"onnx": str(CNN.resolve()), "mean_values": [[0, 0, 0]], "std_values": [[255, 255, 255]],
                     "apply_mean_std": True, "toolkit_version": "2.5.0", "target_platform": "rk3588",
                     "simulated": str(tmp_path.resolve()),
                     "op_types": ["Conv", "Flatten", "Gemm", "GlobalAveragePool", "MaxPool", "Relu"]}


def test_leftover_processes_sees_what_mentions_the_board(board):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)", str(board.folder)])
    try:
        deadline = time.monotonic() + 10
        while not any(str(board.folder) in c for c in board.leftover_processes()) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert any(str(board.folder) in command for command in board.leftover_processes())
    finally:
        sleeper.kill()
        sleeper.wait(timeout=10)
    assert board.leftover_processes() == []
