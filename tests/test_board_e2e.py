"""The board path end to end: a real OpenSSH server on 127.0.0.1, paramiko, the remote
runner, and a test double of rknnlite that computes outputs from the uploaded model."""

import json
import re
import shutil
import socket
import stat
import threading
import time
from pathlib import Path

from conftest import EXAMPLES, MODELS, write_spec

FAILURE_LINE = re.compile(r"^FAILED \S+::(.+?) - \[(\w+)\]", re.M)


def outcomes(result):
    return dict(FAILURE_LINE.findall(result.stdout.str()))


def assert_board_left_clean(test_board, remote_parent):
    assert list(remote_parent.iterdir()) == [], "the remote work dir was not removed"
    deadline = time.monotonic() + 10
    while test_board.leftover_processes() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert test_board.leftover_processes() == []


def test_the_example_suite_passes_on_the_board_next_to_the_simulator(board_pytest, test_board):
    result, _ = board_pytest(str(EXAMPLES))
    result.assert_outcomes(passed=14)
    out = result.stdout.str()
    for spec in ("cnn", "cnn_int8", "two_input", "dynamic", "avgpool", "yolov5_heads_int8", "yolov5_single"):
        assert re.search(rf"^{spec}\s+2\.5\.0\s+sim\s+.*passed", out, re.M), spec
        # Board rows show the board's cosine against onnxruntime and against the simulator.
        row = re.search(rf"^{spec}\s+2\.5\.0\s+board\s+(.*)passed", out, re.M)
        assert row and len(re.findall(r"0\.9\d{5}|1\.0{6}", row.group(1))) >= 2, (spec, row)
    assert "board vs sim" in out
    assert_board_left_clean(test_board, board_pytest.remote_parent)


def test_each_injected_fault_gets_its_class_and_the_session_goes_on(board_pytest, test_board, pytester):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    # Distinct configs give distinct .rknn files; the double injects faults by file name.
    for level, name in enumerate(["good", "segv", "hang", "none_outputs", "wrong_shape"]):
        write_spec(pytester.path, name, f"model: cnn.onnx\nconvert: {{optimization_level: {level % 4}}}\n")
        if name != "good":
            test_board.set_fault(f"{name}.rknn", name)
    try:
        result, _ = board_pytest("--rknn-board-timeout=5")
    finally:
        test_board.clear_faults()
    out = result.stdout.str()
    result.assert_outcomes(passed=6, failed=4)
    board = f"board 127.0.0.1:{test_board.port}"
    assert outcomes(result) == {"segv[2.5.0-board]": "CRASH", "hang[2.5.0-board]": "TIMEOUT",
                                "none_outputs[2.5.0-board]": "BUILD", "wrong_shape[2.5.0-board]": "ACCURACY"}
    assert f"[CRASH] segv[2.5.0-board]: {board}: runner killed by SIGSEGV during inference" in out
    assert f"[TIMEOUT] hang[2.5.0-board]: {board}: no result after 5 s, during inference; runner process group " \
           f"killed" in out
    assert re.search(rf"\[BUILD\] none_outputs\[2\.5\.0-board\]: {board}: RKNNLite\.inference\(\) returned None "
                     rf"for 1 of 1 samples \(first: sample 0, random #0\): E ", out)
    assert re.search(r"\[ACCURACY\] wrong_shape\[2\.5\.0-board\]: output 'logits': shape \(1, 9\) does not match the "
                     r"reference \(1, 10\); the simulator passes, so the board runtime broke it \(board vs simulator "
                     r"cosine: logits nan, features 0\.9\d+\)", out)
    assert_board_left_clean(test_board, board_pytest.remote_parent)


def test_a_runtime_older_than_the_toolkit_is_reported_with_both_versions(board_pytest, test_board, pytester):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    board = rf"board 127\.0\.0\.1:{test_board.port}"
    # A 1.x runtime cannot read the model: ENV, with the runtime's own line.
    result, _ = board_pytest(python=str(test_board.make_python("ancient", runtime_version="1.4.0")))
    assert outcomes(result) == {"cnn[2.5.0-board]": "ENV"}
    result.stdout.re_match_lines([rf".*\[ENV\] cnn\[2\.5\.0-board\]: {board}: librknnrt 1\.4\.0.* is older than "
                                  r"rknn-toolkit2 2\.5\.0 that built the model; RKNNLite\.init_runtime\(\) returned -1: "
                                  r"E RKNN: Invalid RKNN model version 6.*"])
    # A 2.x runtime only warns and runs it: the item passes and says so.
    result, _ = board_pytest(python=str(test_board.make_python("old", runtime_version="2.3.0")))
    result.assert_outcomes(passed=2, warnings=1)
    result.stdout.re_match_lines([rf".*RknnWarning: {board}: librknnrt 2\.3\.0.* is older than rknn-toolkit2 2\.5\.0 "
                                  r"that built the model \(.*RKNN Model version: 2\.5\.0 not match with rknn runtime "
                                  r"version: 2\.3\.0\)"])


def test_a_board_of_another_soc_is_env(board_pytest, test_board, pytester):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    result, _ = board_pytest(python=str(test_board.make_python("rk3568", soc="rk3568")))
    assert outcomes(result) == {"cnn[2.5.0-board]": "ENV"}
    result.stdout.fnmatch_lines(["*board 127.0.0.1:* is an rk3568 (*), the spec targets rk3588*"])


def test_host_keys_are_verified_unless_insecure(board_pytest, test_board, pytester):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    known_hosts = pytester.path / ".ssh" / "known_hosts"
    other_key = "AAAAC3NzaC1lZDI1NTE5AAAAIBdr0SY0gEYNtCBxH2Hc6k6WYzPoRm6Pb4W0JpQ6cY0c"
    known_hosts.write_text(f"[127.0.0.1]:{test_board.port} ssh-ed25519 {other_key}\n")
    result, _ = board_pytest()
    assert outcomes(result) == {"cnn[2.5.0-board]": "ENV"}
    result.stdout.fnmatch_lines(["*its host key does not match known_hosts*--rknn-board-insecure*"])
    known_hosts.write_text("")
    result, _ = board_pytest()
    result.stdout.fnmatch_lines(["*its host key is not in known_hosts; verify it and add it (ssh-keyscan -p*"])
    result, _ = board_pytest("--rknn-board-insecure")
    result.assert_outcomes(passed=2)


def test_an_unreachable_board_fails_all_its_items_after_one_attempt(board_pytest, pytester):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    for name in ("a", "b", "c"):
        write_spec(pytester.path, name, f"model: cnn.onnx\ninputs: {{images: {{random: [0, 1], seed: {ord(name)}}}}}\n")
    silent = socket.socket()  # accepts TCP connections but never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    accepted = []
    threading.Thread(target=lambda: accepted.append(silent.accept()), daemon=True).start()
    try:
        started = time.monotonic()
        result, _ = board_pytest("--rknn-board-connect-timeout=2", board=f"127.0.0.1:{silent.getsockname()[1]}")
        elapsed = time.monotonic() - started
    finally:
        silent.close()
    assert outcomes(result) == {f"{n}[2.5.0-board]": "ENV" for n in "abc"}
    result.stdout.fnmatch_lines(["*no answer within 2 s (is it on and reachable?)*"])
    assert len(accepted) == 1  # one connection attempt for the whole session, not one per item
    assert elapsed < 60


def test_refused_connections_and_wrong_keys_are_env(board_pytest, test_board, pytester, tmp_path):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    closed = socket.socket()
    closed.bind(("127.0.0.1", 0))
    port = closed.getsockname()[1]
    closed.close()
    result, _ = board_pytest(board=f"127.0.0.1:{port}")
    result.stdout.fnmatch_lines([f"*board 127.0.0.1:{port}: cannot connect: Connection refused (is sshd running on "
                                 f"port {port}?)"])
    stranger = test_board.make_user_key(tmp_path / "stranger")
    result, _ = board_pytest(key=str(stranger))
    result.stdout.fnmatch_lines(["*authentication failed as '*' (tried key *stranger*)*--rknn-ssh-key*"])


def test_a_board_python_without_rknnlite_is_env(board_pytest, pytester):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    result, _ = board_pytest(python="/usr/bin/python3 -S")  # no site-packages: no numpy, no rknnlite
    assert outcomes(result) == {"cnn[2.5.0-board]": "ENV"}
    result.stdout.fnmatch_lines(["*numpy is not importable*rknnlite is not importable*--rknn-board-python*"])


def test_odd_model_names_survive_the_remote_shell(board_pytest, test_board, pytester):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    name = "odd name $(touch pwned);'q'"
    write_spec(pytester.path, name, "model: cnn.onnx\n")
    result, _ = board_pytest()
    result.assert_outcomes(passed=2)
    assert not (pytester.path / "pwned").exists()
    assert_board_left_clean(test_board, board_pytest.remote_parent)


def test_an_artifact_the_board_does_not_know_is_refused_by_the_runtime(board_pytest, test_board, pytester):
    # Without the registrar the double knows no model under this sha256, as a board would
    # not recognise a damaged or foreign file.
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "unknown", "model: cnn.onnx\nconvert: {optimization_level: 1}\n")
    test_board.clear_models()
    result, _ = board_pytest(register=False)
    assert outcomes(result) == {"unknown[2.5.0-board]": "BUILD"}
    result.stdout.fnmatch_lines(["*RKNNLite.init_runtime() returned -1: E RKNN: parseRKNN from buffer: Invalid "
                                 "RKNN format!*"])


def test_board_results_carry_the_board_fingerprint(board_pytest, pytester):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "model", "model: cnn.onnx\n")
    pytester.makepyfile(test_api="""
        import pytest

        @pytest.mark.rknn_spec("model.rknn.yaml")
        def test_board(rknn_result):
            assert rknn_result.passed, rknn_result.message
            if rknn_result.backend == "board":
                board = rknn_result.board
                assert board["soc"] == "rk3588" and board["driver"] == "0.9.8"
                assert board["librknnrt"].startswith("2.5.0 (") and board["rknn_toolkit_lite2"]
                assert rknn_result["logits"].vs_sim_cosine > 0.999
            else:
                assert rknn_result.board is None and rknn_result["logits"].vs_sim_cosine is None
    """)
    result, _ = board_pytest("test_api.py", "-v")
    result.assert_outcomes(passed=2)
    result.stdout.fnmatch_lines(["*test_board?2.5.0-sim? PASSED*", "*test_board?2.5.0-board? PASSED*"])


def test_a_board_runtime_that_got_worse_fails_its_baseline_while_the_simulator_passes(board_pytest, test_board,
                                                                                     pytester, tmp_path):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "drifty", "model: cnn.onnx\n")
    result, _ = board_pytest("--rknn-baseline=bl", "--rknn-baseline-update")
    result.assert_outcomes(passed=2)
    entries = json.loads((pytester.path / "bl" / "drifty.json").read_text())["entries"]
    assert sorted(entries) == ["2.5.0-board", "2.5.0-sim"]
    assert entries["2.5.0-board"]["metrics"]["vs_sim_cosine.logits"] > 0.999

    test_board.set_fault("drifty.rknn", "drift")
    try:
        report = tmp_path / "report.json"
        result, _ = board_pytest("--rknn-baseline=bl", f"--rknn-json={report}")
    finally:
        test_board.clear_faults()
    assert outcomes(result) == {"drifty[2.5.0-board]": "ACCURACY"}
    items = {i["backend"]: i for i in json.loads(report.read_text())["items"]}
    board = items["board"]
    assert board["failures"] and all(line.startswith("baseline bl/drifty.json: ") for line in board["failures"])
    failed = {name for name, delta in board["comparisons"][0]["deltas"].items() if delta["failed"]}
    assert "vs_sim_cosine.logits" in failed and not {n for n in failed if n.startswith("max_abs")}
    assert min(board["metrics"][f"cosine.{o}"] for o in ("logits", "features")) >= 0.99  # the absolute check holds
    fingerprint = board["fingerprint"]["board"]
    assert fingerprint["soc"] == "rk3588" and fingerprint["librknnrt"].startswith("2.5.0 (")
    assert fingerprint["driver"] and fingerprint["rknn_toolkit_lite2"] and fingerprint["python"]
    assert items["sim"]["outcome"] == "passed" and items["sim"]["fingerprint"].get("board") is None


def test_the_remote_work_dir_is_private_and_removed_at_the_end(test_board, tmp_path, monkeypatch):
    from pytest_rknn.board.connection import BoardAddress, SshSettings
    from pytest_rknn.board.session import BoardSession

    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".ssh").mkdir()
    (tmp_path / ".ssh" / "known_hosts").write_text(test_board.host_key_line + "\n")
    parent = tmp_path / "remote parent"
    parent.mkdir()
    session = BoardSession(BoardAddress(test_board.host, test_board.port), SshSettings(key_path=str(test_board.key_path)),
                           python=str(test_board.python), workdir_parent=str(parent))
    info = session.start()
    workdir = Path(session.workdir)
    assert workdir.parent == parent and stat.S_IMODE(workdir.stat().st_mode) == 0o700
    assert (workdir / "runner.py").is_file()
    assert info.soc == "rk3588" and info.librknnrt.startswith("2.5.0") and info.numpy
    session.close()
    session.close()  # twice is harmless
    assert list(parent.iterdir()) == []
