"""The board path end to end: a real OpenSSH server on loopback, paramiko, the remote runner,
and a test double of rknnlite that computes outputs from the uploaded model.

The double only stands in for the NPU. What these tests check is the plugin's own work: the
sha256 check, the classes, the blame, clean-up, quoting, SSH settings and the farm. Each
test has a board personality of its own (`board_pytest.board`), so no test sees another's
models, faults or trace."""

import hashlib
import json
import os
import pwd
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from conftest import EXAMPLES, FIXTURES, MODELS, alive, job_dirs, write_spec

from pytest_rknn.comparisons import worsening

FAILURE_LINE = re.compile(r"^FAILED \S+::(.+?) - \[(\w+)\]", re.M)
YOLO = FIXTURES / "yolo"


def outcomes(result):
    """{item name: failure class} of the failed items, from the short summary."""
    return dict(FAILURE_LINE.findall(result.stdout.str()))


def json_items(report):
    return {(i["spec"], i["backend"]): i for i in json.loads(report.read_text())["items"]}


def assert_board_left_clean(test_board, remote_parent):
    deadline = time.monotonic() + 10
    while test_board.leftover_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert test_board.leftover_processes() == []
    assert list(Path(remote_parent).iterdir()) == [], "the remote work dir was not removed"


def inits(board):
    """sha256 -> the rknn_init calls the double saw for it."""
    found = {}
    for call in board.calls():
        if call["event"] == "rknn_init":
            found.setdefault(call["sha256"], []).append(call)
    return found


def copy_cnn(folder):
    shutil.copy(MODELS / "cnn.onnx", folder / "cnn.onnx")


# ---------------------------------------------------------------- passing runs


def test_the_example_suite_passes_on_a_farm_of_two_boards_under_xdist(board_pytest, test_board, pytester, tmp_path):
    """Seven specs on two boards, one named through ~/.ssh/config (HostName, Port, User,
    IdentityFile; the User overridden by --rknn-board-user), one on IPv6, in two xdist workers."""
    if not test_board.port6:
        pytest.fail("this machine has no IPv6 loopback (::1); the farm test needs it")
    (pytester.path / ".ssh" / "config").write_text(
        f"Host farm-a\n  HostName 127.0.0.1\n  Port {test_board.port}\n  User nobody\n"
        f"  IdentityFile {test_board.key_path}\n"
        f"Host ::1\n  IdentityFile {test_board.key_path}\n")
    ports = {"farm-a": test_board.port, f"[::1]:{test_board.port6}": test_board.port6}
    report, junit = tmp_path / "report.json", tmp_path / "junit.xml"
    result, _ = board_pytest(str(EXAMPLES), "-n", "2", f"--rknn-board-user={test_board.user}",
                             f"--rknn-json={report}", f"--junitxml={junit}", board=",".join(ports), key=False)
    result.assert_outcomes(passed=14)
    out = result.stdout.str()
    specs = ("cnn", "cnn_int8", "two_input", "dynamic", "avgpool", "yolov5_heads_int8", "yolov5_single")
    for spec in specs:
        assert re.search(rf"^{spec}\s+2\.5\.0\s+sim\s+.*passed", out, re.M), spec
        # Board rows show the board's cosine against onnxruntime and against the simulator.
        row = re.search(rf"^{spec}\s+2\.5\.0\s+board\s+(.*)passed", out, re.M)
        assert row and len(re.findall(r"0\.9\d{5}|1\.0{6}", row.group(1))) >= 2, (spec, row)

    items = json_items(report)
    seen = inits(board_pytest.board)
    assigned = {}
    for spec in specs:
        board_item = items[spec, "board"]
        address = board_item["fingerprint"]["board"]["address"]
        assigned[spec] = address
        # The board ran the exact artifact the simulator built, once, on the board the report names.
        sha = board_item["fingerprint"]["rknn_sha256"]
        assert sha == items[spec, "sim"]["fingerprint"]["rknn_sha256"]
        assert [call["ssh_port"] for call in seen.pop(sha)] == [ports[address]], spec
    assert seen == {}  # nothing else arrived
    assert {call["core_mask"] for call in board_pytest.board.calls()} == {0}  # --rknn-core-mask auto
    assert set(assigned.values()) == set(ports), assigned  # both boards got work

    cases = {case.get("name"): {p.get("name"): p.get("value") for p in case.iter("property")}
             for case in ET.parse(junit).getroot().iter("testcase")}
    props = cases["cnn[2.5.0-board]"]
    assert props["rknn.backend"] == "board" and props["rknn.board.address"] == assigned["cnn"]
    assert props["rknn.board.soc"] == "rk3588" and props["rknn.board.librknnrt"].startswith("2.5.0 (")
    assert props["rknn.board.driver"] == "0.9.8" and props["rknn.board.rknn_toolkit_lite2"] == "2.5.0"
    assert float(props["rknn.vs_sim_cosine.logits"]) == pytest.approx(
        items["cnn", "board"]["metrics"]["vs_sim_cosine.logits"], abs=1e-8)
    assert_board_left_clean(test_board, board_pytest.remote_parent)

    # The same (spec, version) goes to the same board in another run, without xdist.
    report2 = tmp_path / "again.json"
    result, _ = board_pytest(str(EXAMPLES), "-k", "cnn or avgpool or dynamic", f"--rknn-board-user={test_board.user}",
                             f"--rknn-json={report2}", board=",".join(ports), key=False)
    result.assert_outcomes(passed=8)
    again = {spec: item["fingerprint"]["board"]["address"] for (spec, backend), item in json_items(report2).items()
             if backend == "board"}
    assert again == {spec: assigned[spec] for spec in again} and len(again) == 4


def test_board_results_carry_the_board_fingerprint_and_the_core_mask_reaches_the_runtime(board_pytest, pytester):
    copy_cnn(pytester.path)
    write_spec(pytester.path, "model", "model: cnn.onnx\n")
    pytester.makepyfile(test_api="""
        import pytest

        @pytest.mark.rknn_spec("model.rknn.yaml")
        def test_board(rknn_result):
            assert rknn_result.passed, rknn_result.message
            if rknn_result.backend == "board":
                board = rknn_result.board
                assert board["soc"] == "rk3588" and board["driver"] == "0.9.8"
                assert board["librknnrt"].startswith("2.5.0 (") and board["rknn_toolkit_lite2"] == "2.5.0"
                assert 0.999 < rknn_result["logits"].vs_sim_cosine <= 1.0
            else:
                assert rknn_result.board is None and rknn_result["logits"].vs_sim_cosine is None
    """)
    result, _ = board_pytest("test_api.py", "-v", "--rknn-core-mask=0_1")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_board?2.5.0-sim? PASSED*", "*test_board?2.5.0-board? PASSED*"])
    assert [call["core_mask"] for call in board_pytest.board.calls() if call["event"] == "rknn_init"] == [3]


# ---------------------------------------------------------------- what the board does wrong


def test_each_injected_fault_gets_its_class_and_the_session_goes_on(board_pytest, test_board, pytester):
    copy_cnn(pytester.path)
    # Distinct configs give distinct .rknn files; the double injects faults by file name.
    for level, name in enumerate(["good", "segv", "none_outputs", "wrong_shape"]):
        write_spec(pytester.path, name, f"model: cnn.onnx\nconvert: {{optimization_level: {level}}}\n")
        if name != "good":
            board_pytest.board.set_fault(f"{name}.rknn", name)
    result, _ = board_pytest()
    out = result.stdout.str()
    result.assert_outcomes(passed=5, failed=3)
    board = f"board 127.0.0.1:{test_board.port}"
    assert outcomes(result) == {"segv[2.5.0-board]": "CRASH", "none_outputs[2.5.0-board]": "BUILD",
                                "wrong_shape[2.5.0-board]": "ACCURACY"}
    assert f"[CRASH] segv[2.5.0-board]: {board}: runner killed by SIGSEGV during inference" in out
    assert re.search(rf"\[BUILD\] none_outputs\[2\.5\.0-board\]: {board}: RKNNLite\.inference\(\) returned None "
                     rf"for 1 of 1 samples \(first: sample 0, random #0\): E RKNN: failed to submit!", out)
    assert re.search(r"\[ACCURACY\] wrong_shape\[2\.5\.0-board\]: output 'logits': shape \(1, 9\) does not match the "
                     r"reference \(1, 10\); the simulator passes, so the board runtime broke it \(board vs simulator "
                     r"cosine: logits nan, features [01]\.\d+\)", out)
    assert_board_left_clean(test_board, board_pytest.remote_parent)


def test_a_hung_board_job_is_killed_with_everything_it_started(board_pytest, test_board, pytester):
    copy_cnn(pytester.path)
    write_spec(pytester.path, "hang", "model: cnn.onnx\n")
    board_pytest.board.set_fault("hang.rknn", "hang_child")  # starts a helper process, then hangs
    result, _ = board_pytest("--rknn-board-timeout=5")  # only this item runs on the board
    assert outcomes(result) == {"hang[2.5.0-board]": "TIMEOUT"}
    result.stdout.fnmatch_lines([f"*[[]TIMEOUT[]] hang[[]2.5.0-board[]]: board 127.0.0.1:{test_board.port}: no result "
                                 f"after 5 s, during inference; runner process group killed*"])
    helpers = [call["helper_pid"] for call in board_pytest.board.calls() if call["event"] == "helper"]
    assert len(helpers) == 1 and not alive(helpers[0])  # the group, not just the job, was killed
    assert_board_left_clean(test_board, board_pytest.remote_parent)


def test_ctrl_c_kills_the_running_board_job_and_removes_the_work_dir(board_pytest, test_board, pytester,
                                                                     toolkit_cache, tmp_path):
    copy_cnn(pytester.path)
    write_spec(pytester.path, "stuck", "model: cnn.onnx\n")
    board_pytest.board.set_fault("stuck.rknn", "hang_child")
    command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", f"--basetemp={tmp_path / 'basetemp'}",
               f"--rknn-toolkit-cache={toolkit_cache}", *board_pytest.options()]
    process = subprocess.Popen(command, cwd=pytester.path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not [c for c in board_pytest.board.calls() if c["event"] == "helper"]:
            assert process.poll() is None, process.stdout.read().decode()
            assert time.monotonic() < deadline, "the board job never started"
            time.sleep(0.1)
        process.send_signal(signal.SIGINT)
        output = process.communicate(timeout=60)[0].decode()
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
    assert "KeyboardInterrupt" in output, output
    helper = next(c["helper_pid"] for c in board_pytest.board.calls() if c["event"] == "helper")
    assert not alive(helper)
    assert_board_left_clean(test_board, board_pytest.remote_parent)


def test_the_board_checks_the_artifact_sha256_before_running_it(board_pytest, pytester):
    # The .rknn file changes after it was built and hashed, before it goes to the board.
    pytester.makepyfile(corrupter="""
        def pytest_rknn_artifact_built(rknn_path):
            with open(rknn_path, "ab") as handle:
                handle.write(b"\\0")
    """)
    copy_cnn(pytester.path)
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    result, basetemp = board_pytest("-p", "corrupter")
    assert outcomes(result) == {"cnn[2.5.0-board]": "ENV"}
    found = hashlib.sha256((job_dirs(basetemp, "cnn")["2.5.0"] / "cnn.rknn").read_bytes()).hexdigest()
    result.stdout.fnmatch_lines([f"*[[]ENV[]] cnn[[]2.5.0-board[]]: board *: the uploaded .rknn has sha256 "
                                 f"{found[:12]}..., not the built one; the copy was damaged on the way*"])
    assert inits(board_pytest.board) == {}  # the runtime never saw it


def test_blame_names_the_conversion_or_the_board_runtime_for_cosine_and_detection_failures(board_pytest, pytester,
                                                                                            tmp_path):
    """Constructed: a cosine threshold no float16 computation reaches (simulator and board fail);
    the int8 single-output detector, which finds nothing in the simulator (RKNN-FACTS), on a
    board whose outputs are halved; the fp16 three-head detector, which passes in the simulator,
    on the same board: halving keeps every cosine at 1 and quarters every score."""
    copy_cnn(pytester.path)
    write_spec(pytester.path, "strict", "model: cnn.onnx\nchecks: {cosine: {min: 0.99999999}}\n")
    detector = (f"inputs: {{images: {{images: '{YOLO}/val/images/*.jpg', letterbox: 160, limit: 10}}}}\n"
                f"convert: {{mean_values: [[0, 0, 0]], std_values: [[255, 255, 255]]{{quantize}}}}\n"
                f"checks: {{cosine: {{min: 0.9}}, yolov5: {{labels: '{YOLO}/val/labels.json', count_tolerance: null, "
                f"map50_ratio: 0.5}}}}\n")
    write_spec(pytester.path, "det_conv", f"model: {YOLO}/yolov5_single.onnx\n" + detector.replace(
        "{quantize}", f", quantize: {{dataset: '{YOLO}/calib/*.jpg'}}"))
    write_spec(pytester.path, "det_board", f"model: {YOLO}/yolov5_heads.onnx\n" + detector.replace("{quantize}", ""))
    for name in ("det_conv", "det_board"):
        board_pytest.board.set_fault(f"{name}.rknn", "scale")
    report = tmp_path / "report.json"
    result, _ = board_pytest(f"--rknn-json={report}")
    assert outcomes(result) == {"strict[2.5.0-sim]": "ACCURACY", "strict[2.5.0-board]": "ACCURACY",
                                "det_conv[2.5.0-sim]": "ACCURACY", "det_conv[2.5.0-board]": "ACCURACY",
                                "det_board[2.5.0-board]": "ACCURACY"}
    items = json_items(report)
    conversion, runtime = "the simulator fails too, so the conversion broke it", \
        "the simulator passes, so the board runtime broke it"
    assert re.fullmatch(rf"output '\w+' sample 0 \(random #0\): cosine 0\.\d+ < min 0\.99999999; {conversion} "
                        rf"\(board vs simulator cosine: logits [01]\.\d+, features [01]\.\d+\)",
                        items["strict", "board"]["message"]), items["strict", "board"]["message"]
    for spec, blame in (("det_conv", conversion), ("det_board", runtime)):
        board = items[spec, "board"]
        assert board["message"].startswith("yolov5: ") and f"; {blame} (board vs simulator cosine: " in board["message"]
        assert all(line.startswith("yolov5: ") for line in board["failures"]), board["failures"]
    # The board's detector failure is not visible to cosine: every output still agrees.
    assert min(v for k, v in items["det_board", "board"]["metrics"].items() if k.startswith("cosine.")) > 0.999
    assert items["det_board", "sim"]["outcome"] == "passed"


def test_a_runtime_older_than_the_toolkit_is_reported_with_both_versions(board_pytest, test_board, pytester):
    copy_cnn(pytester.path)
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    board = rf"board 127\.0\.0\.1:{test_board.port}"
    # A 1.x runtime cannot read the model: ENV, with the runtime's own line.
    result, _ = board_pytest(python=board_pytest.personality(runtime_version="1.4.0").python)
    assert outcomes(result) == {"cnn[2.5.0-board]": "ENV"}
    result.stdout.re_match_lines([rf".*\[ENV\] cnn\[2\.5\.0-board\]: {board}: librknnrt 1\.4\.0.* is older than "
                                  r"rknn-toolkit2 2\.5\.0 that built the model; RKNNLite\.init_runtime\(\) returned -1: "
                                  r"E RKNN: Invalid RKNN model version 6.*"])
    # A 2.x runtime only warns and runs it: the item passes and says so.
    result, _ = board_pytest(python=board_pytest.personality(runtime_version="2.3.0").python)
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.re_match_lines([rf".*RknnWarning: {board}: librknnrt 2\.3\.0.* is older than rknn-toolkit2 2\.5\.0 "
                                  r"that built the model \(.*RKNN Model version: 2\.5\.0 not match with rknn runtime "
                                  r"version: 2\.3\.0\)"])


def test_a_board_of_another_soc_is_env(board_pytest, pytester):
    copy_cnn(pytester.path)
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    result, _ = board_pytest(python=board_pytest.personality(soc="rk3568").python)
    assert outcomes(result) == {"cnn[2.5.0-board]": "ENV"}
    result.stdout.fnmatch_lines(["*board 127.0.0.1:* is an rk3568 (*), the spec targets rk3588*"])


def test_a_model_the_board_runtime_rejects_is_build_with_the_runtimes_own_line(board_pytest, pytester):
    # Without the registrar the double knows no model under this sha256: it stands for a file
    # the runtime cannot parse. The plugin's part is the class and the quoted line.
    copy_cnn(pytester.path)
    write_spec(pytester.path, "unknown", "model: cnn.onnx\n")
    result, _ = board_pytest(register=False)
    assert outcomes(result) == {"unknown[2.5.0-board]": "BUILD"}
    result.stdout.fnmatch_lines(["*RKNNLite.init_runtime() returned -1: E RKNN: parseRKNN from buffer: Invalid "
                                 "RKNN format!*"])


def test_a_board_runtime_that_got_worse_fails_its_baseline_while_the_simulator_passes(board_pytest, pytester,
                                                                                     tmp_path):
    copy_cnn(pytester.path)
    # A vs_sim_cosine below the drift's, so that only the baseline fails it. The drift's noise also makes
    # inference slower (measured 0.34 -> 0.48 ms), which baseline_gate.latency would fail: off here.
    write_spec(pytester.path, "drifty", "model: cnn.onnx\nchecks: {vs_sim_cosine: 0.99}\nbaseline_gate: {latency: null}\n")
    result, _ = board_pytest("--rknn-baseline=bl", "--rknn-baseline-update")
    result.assert_outcomes(passed=2)
    entries = json.loads((pytester.path / "bl" / "drifty.json").read_text())["entries"]
    assert sorted(entries) == ["2.5.0-board", "2.5.0-sim"]
    assert entries["2.5.0-board"]["metrics"]["vs_sim_cosine.logits"] > 0.999

    board_pytest.board.set_fault("drifty.rknn", "drift")
    report = tmp_path / "report.json"
    result, _ = board_pytest("--rknn-baseline=bl", f"--rknn-json={report}")
    assert outcomes(result) == {"drifty[2.5.0-board]": "ACCURACY"}
    items = {i["backend"]: i for i in json.loads(report.read_text())["items"]}
    board = items["board"]
    assert board["failures"] and all(line.startswith("baseline bl/drifty.json: ") for line in board["failures"])
    deltas = board["comparisons"][0]["deltas"]
    failed = {name for name, delta in deltas.items() if delta["failed"]}
    # Exactly the metrics worse than their allowance fail, and one line each says so.
    assert failed == {name for name, d in deltas.items()
                      if d["allowed"] is not None and worsening(name, d["value"], d["reference"]) > d["allowed"]}
    assert "vs_sim_cosine.logits" in failed and len(board["failures"]) == len(failed)
    assert {name for name, d in deltas.items() if d["allowed"] is None} >= {"max_abs.logits", "max_abs.features"}
    assert min(board["metrics"][f"cosine.{o}"] for o in ("logits", "features")) >= 0.99  # the absolute check holds
    fingerprint = board["fingerprint"]["board"]
    assert fingerprint["soc"] == "rk3588" and fingerprint["librknnrt"].startswith("2.5.0 (")
    assert items["sim"]["outcome"] == "passed" and items["sim"]["fingerprint"].get("board") is None


# ---------------------------------------------------------------- SSH, shells and options


def test_host_keys_are_verified_unless_insecure(board_pytest, test_board, pytester):
    copy_cnn(pytester.path)
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    known_hosts = pytester.path / ".ssh" / "known_hosts"
    other_key = "AAAAC3NzaC1lZDI1NTE5AAAAIBdr0SY0gEYNtCBxH2Hc6k6WYzPoRm6Pb4W0JpQ6cY0c"
    known_hosts.write_text(f"[127.0.0.1]:{test_board.port} ssh-ed25519 {other_key}\n")
    result, _ = board_pytest()
    assert outcomes(result) == {"cnn[2.5.0-board]": "ENV"}
    result.stdout.fnmatch_lines(["*its host key does not match known_hosts*--rknn-board-insecure*"])
    known_hosts.write_text("")
    result, _ = board_pytest()
    assert outcomes(result) == {"cnn[2.5.0-board]": "ENV"}
    result.stdout.fnmatch_lines(["*its host key is not in known_hosts; verify it and add it (ssh-keyscan -p*"])
    result, _ = board_pytest("--rknn-board-insecure")
    result.assert_outcomes(passed=2)
    assert known_hosts.read_text() == ""  # accepting a key never writes it


def test_an_unreachable_board_fails_all_its_items_after_one_attempt(board_pytest, pytester):
    copy_cnn(pytester.path)
    for name in ("a", "b", "c"):
        write_spec(pytester.path, name, f"model: cnn.onnx\ninputs: {{images: {{random: [0, 1], seed: {ord(name)}}}}}\n")
    silent = socket.socket()  # accepts every TCP connection but never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    silent.settimeout(0.2)
    accepted, stop = [], threading.Event()

    def accept_all():
        while not stop.is_set():
            try:
                accepted.append(silent.accept()[0])
            except socket.timeout:
                continue
            except OSError:
                return

    thread = threading.Thread(target=accept_all, daemon=True)
    thread.start()
    try:
        result, _ = board_pytest("--rknn-board-connect-timeout=2", board=f"127.0.0.1:{silent.getsockname()[1]}")
    finally:
        stop.set()
        thread.join(timeout=5)
        for connection in accepted:
            connection.close()
        silent.close()
    assert outcomes(result) == {f"{n}[2.5.0-board]": "ENV" for n in "abc"}
    result.stdout.fnmatch_lines(["*no answer within 2 s (is it on and reachable?)*"])
    assert len(accepted) == 1  # one connection attempt for the whole session, not one per item


def test_refused_connections_and_wrong_keys_are_env(board_pytest, test_board, pytester, tmp_path):
    copy_cnn(pytester.path)
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    closed = socket.socket()  # bound, never listening: connections are refused, and the port stays ours
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    try:
        result, _ = board_pytest(board=f"127.0.0.1:{port}")
    finally:
        closed.close()
    assert outcomes(result) == {"cnn[2.5.0-board]": "ENV"}
    result.stdout.fnmatch_lines([f"*board 127.0.0.1:{port}: cannot connect: Connection refused (is sshd running on "
                                 f"port {port}?)"])
    stranger = test_board.make_user_key(tmp_path / "stranger")
    result, _ = board_pytest(key=str(stranger))
    assert outcomes(result) == {"cnn[2.5.0-board]": "ENV"}
    result.stdout.fnmatch_lines(["*authentication failed as '*' (tried key *stranger*)*--rknn-ssh-key*"])


def test_a_board_python_without_rknnlite_is_env(board_pytest, pytester):
    copy_cnn(pytester.path)
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    result, _ = board_pytest(python="/usr/bin/python3 -S")  # no site-packages: no numpy, no rknnlite
    assert outcomes(result) == {"cnn[2.5.0-board]": "ENV"}
    result.stdout.fnmatch_lines(["*numpy is not importable*rknnlite is not importable*--rknn-board-python*"])


def test_remote_paths_and_the_board_python_are_quoted_so_the_shell_runs_nothing_of_them(board_pytest, test_board,
                                                                                        pytester, tmp_path):
    token = secrets.token_hex(4)
    # The board's shell starts in the user's home: that is where an unquoted `touch` would land.
    home = Path(pwd.getpwnam(test_board.user).pw_dir)
    marks = [home / f"pwned-{token}-{n}" for n in range(3)]
    workdir = tmp_path / f"work $(touch pwned-{token}-0) `touch pwned-{token}-1` 'q\""
    workdir.mkdir()
    # One shell word (no blank), so the option is one command word, which the plugin must quote.
    python = board_pytest.personality(name=f"py$(touch${{IFS}}pwned-{token}-2);x").python
    copy_cnn(pytester.path)
    write_spec(pytester.path, "odd name;'q'", "model: cnn.onnx\n")
    try:
        result, _ = board_pytest(python=str(python), workdir=str(workdir))
        result.assert_outcomes(passed=2)
        assert [mark for mark in marks if mark.exists()] == []
    finally:
        for mark in marks:
            mark.unlink(missing_ok=True)
    assert len(inits(board_pytest.board)) == 1  # it really ran there
    assert_board_left_clean(test_board, workdir)


def test_bad_board_options_are_usage_errors_before_anything_runs(board_pytest):
    for option, words in (("--rknn-core-mask=9", "--rknn-core-mask: '9' is not one of auto, 0, 1, 2, 0_1, 0_1_2, all"),
                          ("--rknn-board-timeout=5m", "--rknn-board-timeout: '5m' is not a number of seconds"),
                          ("--rknn-ssh-key=no-such-key", "--rknn-ssh-key: no such file: no-such-key (give the private "
                                                         "key the boards accept, or leave the option out*")):
        result, _ = board_pytest(option)
        assert result.ret == 4, (option, result.stdout.str())
        result.stderr.fnmatch_lines([f"*{words}*"])


def _board_session(test_board, home: Path, address, **settings):
    from pytest_rknn.board.connection import SshSettings
    from pytest_rknn.board.session import BoardSession

    (home / ".ssh").mkdir(parents=True, exist_ok=True)
    (home / ".ssh" / "known_hosts").write_text(test_board.host_key_line + "\n")
    return BoardSession(address, SshSettings(**settings), python=str(test_board.python), workdir_parent=str(home))


def test_ssh_config_gives_host_port_user_and_key_and_the_user_option_wins(test_board, tmp_path, monkeypatch):
    from pytest_rknn.board.connection import BoardAddress
    from pytest_rknn.errors import ENV, RknnError

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "config").write_text(f"Host myboard\n  HostName 127.0.0.1\n  Port {test_board.port}\n"
                                              f"  User nobody\n  IdentityFile {test_board.key_path}\n")
    session = _board_session(test_board, tmp_path, BoardAddress("myboard"))
    with pytest.raises(RknnError) as info:
        session.start()  # reached the board on the configured port, as the configured user, with the key
    assert info.value.failure_class == ENV
    assert info.value.message == (f"board myboard: authentication failed as 'nobody' (tried key {test_board.key_path}); "
                                  f"pass --rknn-ssh-key or --rknn-board-user")
    session = _board_session(test_board, tmp_path, BoardAddress("myboard"), user=test_board.user)
    try:
        assert session.start().soc == "rk3588"
    finally:
        session.close()


def test_the_ssh_agent_is_used_when_no_key_is_given(test_board, tmp_path, monkeypatch):
    from pytest_rknn.board.connection import BoardAddress
    from pytest_rknn.errors import RknnError

    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.delenv("SSH_AUTH_SOCK", raising=False)
    address = BoardAddress(test_board.host, test_board.port)
    with pytest.raises(RknnError, match="authentication failed"):
        _board_session(test_board, tmp_path, address).start()  # no agent, no ~/.ssh/id_*: nothing to offer
    folder = Path(tempfile.mkdtemp(prefix="agent-", dir="/tmp"))  # a socket path must stay short
    sock = folder / "agent.sock"
    agent = subprocess.Popen(["ssh-agent", "-D", "-a", str(sock)], stdout=subprocess.DEVNULL,
                             stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 10
        while not sock.exists():
            assert agent.poll() is None and time.monotonic() < deadline, "ssh-agent did not start"
            time.sleep(0.05)
        env = dict(os.environ, SSH_AUTH_SOCK=str(sock))
        subprocess.run(["ssh-add", str(test_board.agent_key_path)], env=env, check=True, capture_output=True,
                       timeout=30, stdin=subprocess.DEVNULL)
        monkeypatch.setenv("SSH_AUTH_SOCK", str(sock))
        session = _board_session(test_board, tmp_path, address)
        try:
            assert session.start().soc == "rk3588"
        finally:
            session.close()
    finally:
        agent.kill()
        agent.wait(timeout=10)
        shutil.rmtree(folder, ignore_errors=True)


def test_the_remote_work_dir_is_private_and_removed_at_the_end(test_board, tmp_path, monkeypatch):
    from pytest_rknn.board.connection import BoardAddress

    monkeypatch.setenv("HOME", str(tmp_path))
    parent = tmp_path / "remote parent"
    parent.mkdir()
    session = _board_session(test_board, tmp_path, BoardAddress(test_board.host, test_board.port),
                             key_path=str(test_board.key_path))
    session.workdir_parent = str(parent)
    info = session.start()
    workdir = Path(session.workdir)
    assert workdir.parent == parent and stat.S_IMODE(workdir.stat().st_mode) == 0o700
    assert (workdir / "runner.py").is_file()
    assert info.soc == "rk3588" and info.librknnrt.startswith("2.5.0") and info.numpy
    session.close()
    session.close()  # twice is harmless
    assert list(parent.iterdir()) == []
