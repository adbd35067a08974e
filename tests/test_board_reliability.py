"""Boards that misbehave the way real ones do: no SFTP, a connection killed in the middle of a
job, a board that goes away, a runner that leaves no result, a board noisier than its
simulator; and board options that are wrong before anything runs. Through the real OpenSSH
test board on loopback (tests/board/testboard.py) and the rknnlite double."""

import re
import socket
import time
import warnings
from pathlib import Path

import pytest

from conftest import MODELS, write_spec
from test_board_e2e import assert_board_left_clean, copy_cnn, json_items, outcomes

LOST = "the SSH connection was lost while running the job"


@pytest.fixture
def own_port(test_board, board_pytest, pytester):
    """listen(sftp=...): a port of the test board that only this test uses (its own sshd config,
    its own login count, powered off by this test alone), in the run's known_hosts."""
    made = []

    def listen(sftp=True):
        listener = test_board.listen(sftp=sftp)
        made.append(listener)
        (pytester.path / ".ssh" / "known_hosts").write_text(test_board.host_key_line + "\n")
        return listener

    yield listen
    for listener in made:
        listener.stop()
        test_board.listeners.remove(listener)


def specs(folder, *names):
    copy_cnn(folder)
    for name in names:  # distinct inputs, so distinct jobs
        write_spec(folder, name, f"model: cnn.onnx\ninputs: {{images: {{random: [0, 255], seed: {len(name)}}}}}\n")


def test_a_board_without_sftp_and_an_unknown_host_key_works_with_one_login_and_one_warning(
        board_pytest, test_board, pytester, own_port, tmp_path):
    """A minimal board image: sshd without SFTP (files go through `cat`), its host key not in
    known_hosts (--rknn-board-insecure, warned about once per session, not per item)."""
    bare = own_port(sftp=False)
    (pytester.path / ".ssh" / "known_hosts").write_text("")
    specs(pytester.path, "one", "two")
    report = tmp_path / "report.json"
    result, _ = board_pytest("--rknn-board-insecure", f"--rknn-json={report}", board=f"127.0.0.1:{bare.port}")
    result.assert_outcomes(passed=4, warnings=1)
    out = result.stdout.str()
    assert "Traceback" not in out + result.stderr.str()
    assert out.count(f"--rknn-board-insecure: the host keys of 127.0.0.1:{bare.port} are not checked") == 1
    result.stdout.fnmatch_lines(["*are not checked, so a machine in between could read the models and answer in "
                                 "the board's place; add the keys to ~/.ssh/known_hosts*"])
    assert {item["outcome"] for item in json_items(report).values()} == {"passed"}
    assert bare.accepted == 1  # one login for the session
    assert (pytester.path / ".ssh" / "known_hosts").read_text() == ""
    assert_board_left_clean(test_board, board_pytest.remote_parent)


def test_a_connection_killed_in_the_middle_of_a_job_is_reopened_and_the_job_runs_again(board_pytest, test_board,
                                                                                       pytester, own_port, tmp_path):
    """The double kills the sshd serving the session while inference runs, and its job hangs on
    (as a job does whose board lost its network). The host reconnects once, kills and removes
    what the old connection left, and runs the job again."""
    port = own_port()
    specs(pytester.path, "cut")
    board_pytest.board.set_fault("cut.rknn", "drop_connection")
    report = tmp_path / "report.json"
    result, _ = board_pytest(f"--rknn-json={report}", board=f"127.0.0.1:{port.port}")
    result.assert_outcomes(passed=2, warnings=1)
    out = result.stdout.str()
    assert re.search(rf"RknnWarning: board 127\.0\.0\.1:{port.port}: {LOST}( \(.+\))?; reconnected and ran the "
                     rf"job again", out), out
    assert "rknn summary" in out and "Traceback" not in out + result.stderr.str()
    assert len(json_items(report)) == 2
    dropped = [call for call in board_pytest.board.calls() if call["event"] == "dropped"]
    assert len(dropped) == 1 and port.accepted == 2  # one drop, one reconnect
    assert_board_left_clean(test_board, board_pytest.remote_parent)  # the hung job too


def test_a_board_that_goes_away_fails_its_remaining_items_at_once_and_is_cleaned_up_when_back(
        board_pytest, test_board, pytester, own_port, tmp_path):
    """The double powers its port off in the middle of `bb`'s job: the reconnect finds nothing,
    `bb` and `ccc` fail with one ENV line, and pytest still writes its summary and the JSON
    report. The board is back before the session ends (a conftest turns it on): what `bb`
    left is killed and removed then."""
    port = own_port()
    specs(pytester.path, "bb", "ccc")
    board_pytest.board.set_fault("bb.rknn", "power_off")
    pytester.makeconftest(f"""
        import os
        import pytest

        @pytest.hookimpl(tryfirst=True)
        def pytest_sessionfinish():
            assert os.path.exists({str(port.power_off_marker)!r})  # off all along
            os.remove({str(port.power_off_marker)!r})
    """)
    report = tmp_path / "report.json"
    started = time.monotonic()
    result, _ = board_pytest(f"--rknn-json={report}", board=f"127.0.0.1:{port.port}")
    assert outcomes(result) == {"bb[2.5.0-board]": "ENV", "ccc[2.5.0-board]": "ENV"}
    result.assert_outcomes(passed=2, failed=2)
    board = rf"board 127\.0\.0\.1:{port.port}"
    gone = (rf"{board}: {LOST}; reconnecting failed: no answer within 10 s \(is it on and reachable\?\); "
            rf"the board's remaining items are not run \(check its power, network and sshd\)")
    items = json_items(report)
    assert len(items) == 4 and all(re.fullmatch(gone, items[spec, "board"]["message"]) for spec in ("bb", "ccc"))
    out = result.stdout.str()
    assert "rknn summary" in out and "Traceback" not in out + result.stderr.str()
    assert time.monotonic() - started < 120
    assert port.accepted == 2  # the session, then the clean-up at the end; no attempt per item
    assert_board_left_clean(test_board, board_pytest.remote_parent)


def test_closing_a_session_whose_board_is_gone_warns_and_never_raises(test_board, tmp_path, monkeypatch):
    from pytest_rknn.board.connection import BoardAddress, SshSettings
    from pytest_rknn.board.session import BoardPool, BoardSession
    from pytest_rknn.errors import RknnWarning

    monkeypatch.setenv("HOME", str(tmp_path))
    port = test_board.listen()
    try:
        (tmp_path / ".ssh").mkdir()
        (tmp_path / ".ssh" / "known_hosts").write_text(test_board.host_key_line + "\n")
        session = BoardSession(BoardAddress("127.0.0.1", port.port), SshSettings(key_path=str(test_board.key_path),
                                                                                  connect_timeout=2),
                               python=str(test_board.python), workdir_parent=str(tmp_path))
        pool = BoardPool([session.address], lambda address: session)
        pool.session_for("x").start()
        workdir = session.workdir
        port.power_off_marker.touch()
        for sshd in port.sessions:
            sshd.kill()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pool.close()
            pool.close()
        said = [str(w.message) for w in caught if issubclass(w.category, RknnWarning)]
        assert said == [f"board 127.0.0.1:{port.port}: cannot remove the work dir {workdir} (no answer within 2 s (is "
                        f"it on and reachable?)); remove it on the board by hand"]
    finally:
        port.stop()
        test_board.listeners.remove(port)
    assert Path(workdir).is_dir()  # where the warning says


def test_a_runner_that_leaves_no_result_is_a_crash_with_its_log_tail(board_pytest, test_board, pytester, tmp_path):
    """Something kills the supervisor and its job: no result.json. Over SFTP, whose `get` makes
    the local file before it finds the remote one missing."""
    specs(pytester.path, "killed")
    board_pytest.board.set_fault("killed.rknn", "no_result")
    report = tmp_path / "report.json"
    result, _ = board_pytest(f"--rknn-json={report}")
    assert outcomes(result) == {"killed[2.5.0-board]": "CRASH"}
    item = json_items(report)["killed", "board"]
    assert item["message"].startswith(f"board 127.0.0.1:{test_board.port}: the runner left no result: it was "
                                      f"killed by SIGKILL during inference (out of memory? see dmesg on the board)")
    assert "[pytest-rknn] step: inference" in item["log_tail"]
    result.stdout.fnmatch_lines(["*rknn log tail*", "*step: inference*"])
    assert "JSONDecodeError" not in result.stdout.str()
    assert_board_left_clean(test_board, board_pytest.remote_parent)


def test_a_board_noisier_than_the_simulator_fails_vs_sim_cosine_while_onnxruntime_still_agrees(board_pytest,
                                                                                               pytester, tmp_path):
    """The drift fault: seeded noise at 5% of each output's spread, on top of what the simulator gives."""
    specs(pytester.path, "drifty")
    board_pytest.board.set_fault("drifty.rknn", "drift")
    report = tmp_path / "report.json"
    result, _ = board_pytest(f"--rknn-json={report}")
    assert outcomes(result) == {"drifty[2.5.0-board]": "ACCURACY"}
    items = json_items(report)
    board = items["drifty", "board"]
    assert re.fullmatch(r"output 'logits': board vs simulator cosine 0\.99\d+ < checks\.vs_sim_cosine min 0\.9999, "
                        r"while against onnxruntime it is 0\.99\d+ \(min 0\.99\); the simulator passes, so the "
                        r"board runtime broke it \(board vs simulator cosine: logits 0\.99\d+, features 0\.99\d+\)",
                        board["message"]), board["message"]
    assert 0.99 < board["metrics"]["vs_sim_cosine.logits"] < 0.9999 and board["metrics"]["cosine.logits"] > 0.99
    assert items["drifty", "sim"]["outcome"] == "passed"


# ---------------------------------------------------------------- options, before anything runs


@pytest.mark.parametrize("value, words", [
    ("bad host!", "'bad host!' is not a host name or IP address"),
    ("256.1.1.1:x", "'256.1.1.1' is not an IPv4 address (four numbers from 0 to 255)"),
    ("10.0.0.1:x", "the port 'x' is not a number from 1 to 65535"),
    ("board:0", "the port '0' is not a number from 1 to 65535"),
    ("board:65536", "the port '65536' is not a number from 1 to 65535"),
    ("[]:22", "'[]' does not hold an IPv6 address"),
    ("[::1", "an IPv6 address goes in brackets, followed by nothing or :PORT"),
    ("[::1]22", "an IPv6 address goes in brackets, followed by nothing or :PORT"),
    ("[10.0.0.1]:22", "'[10.0.0.1]' does not hold an IPv6 address"),
    ("fe80::1::2", "'fe80::1::2' is not an IPv6 address"),
    (":22", "the host is missing"),
    ("-oProxyCommand=x", "'-oProxyCommand=x' is not a host name or IP address"),
])
def test_an_invalid_board_address_names_the_bad_part_and_the_form(value, words):
    from pytest_rknn.board.connection import ADDRESS_FORM, parse_board_option
    from pytest_rknn.errors import RknnError

    with pytest.raises(RknnError) as info:
        parse_board_option(f"good-board,{value}")
    assert info.value.message == f"--rknn-board: '{value}': {words} ({ADDRESS_FORM})"


def test_valid_board_addresses_parse():
    from pytest_rknn.board.connection import BoardAddress, parse_board_option
    from pytest_rknn.errors import RknnError

    assert parse_board_option("192.168.1.10, farm-a:2222,[::1]:22,::1,[fe80::1%eth0],my_board.local") == [
        BoardAddress("192.168.1.10"), BoardAddress("farm-a", 2222), BoardAddress("::1", 22), BoardAddress("::1"),
        BoardAddress("fe80::1%eth0"), BoardAddress("my_board.local")]
    with pytest.raises(RknnError, match="names no board"):
        parse_board_option(" , ")


def test_a_bad_board_address_or_core_mask_is_a_usage_error_at_configure(board_pytest):
    from pytest_rknn.board.session import core_mask_constant
    from pytest_rknn.errors import RknnError

    result, _ = board_pytest(board="256.1.1.1:x")
    assert result.ret == 4 and "Traceback" not in result.stderr.str()
    result.stderr.fnmatch_lines(["*--rknn-board: '256.1.1.1:x': '256.1.1.1' is not an IPv4 address*"])
    with pytest.raises(RknnError, match=r"--rknn-core-mask: '9' is not one of auto, 0, 1, 2, 0_1, 0_1_2, all"):
        core_mask_constant("9")  # what BoardSession checks, for sessions made from Python


# ---------------------------------------------------------------- files and checks, in-process


def test_a_missing_remote_file_leaves_no_local_file_with_or_without_sftp(test_board, tmp_path, monkeypatch):
    from pytest_rknn.board.connection import BoardAddress, SshConnection, SshSettings

    monkeypatch.setenv("HOME", str(tmp_path))
    bare = test_board.listen(sftp=False)
    try:
        (tmp_path / ".ssh").mkdir()
        (tmp_path / ".ssh" / "known_hosts").write_text(test_board.host_key_line + "\n")
        payload = tmp_path / "payload.bin"
        payload.write_bytes(bytes(range(256)) * 4099)  # every byte value, not a multiple of any block
        for port, sftp in ((test_board.port, True), (bare.port, False)):
            connection = SshConnection(BoardAddress("127.0.0.1", port), SshSettings(key_path=str(test_board.key_path)))
            connection.open()
            try:
                local = tmp_path / f"result-{sftp}.json"
                local.write_text("stale")
                assert connection.get(str(tmp_path / "no such file"), local) is False
                assert not local.exists() and list(tmp_path.glob(".*.part")) == []
                remote = tmp_path / f"remote dir 'q' $(x)-{sftp}"
                remote.mkdir()
                connection.put(payload, f"{remote}/payload.bin")
                assert connection.get(f"{remote}/payload.bin", local) is True
                assert local.read_bytes() == payload.read_bytes() == (remote / "payload.bin").read_bytes()
                assert (connection._sftp is not False) == sftp
            finally:
                connection.close()
                connection.close()
    finally:
        bare.stop()
        test_board.listeners.remove(bare)


def test_vs_sim_cosine_has_a_default_a_shorthand_per_output_values_and_can_be_switched_off():
    from pytest_rknn.checks import evaluate
    from pytest_rknn.errors import SpecError
    from pytest_rknn.result import OutputMetrics
    from pytest_rknn.spec import spec_from_dict

    def metrics(name, cosine, vs_sim):
        return OutputMetrics(name=name, samples=1, cosines=[cosine], worst_cosine=cosine, worst_sample=0,
                             worst_label="random #0", shape=[1, 10], ref_shape=[1, 10], vs_sim_cosine=vs_sim)

    def spec(checks=None):
        return spec_from_dict({"model": str(MODELS / "cnn.onnx"), **({"checks": checks} if checks else {})})

    board = [metrics("logits", 0.995, 0.9985), metrics("features", 0.999, 0.99995)]
    assert evaluate(spec(), board) == [
        "output 'logits': board vs simulator cosine 0.998500 < checks.vs_sim_cosine min 0.9999, while against "
        "onnxruntime it is 0.995000 (min 0.99)"]
    assert evaluate(spec({"vs_sim_cosine": 0.998}), board) == []
    per_output = spec({"vs_sim_cosine": {"min": 0.99, "outputs": {"features": 0.99999}}})
    assert [line.split(":")[0] for line in evaluate(per_output, board)] == ["output 'features'"]
    assert evaluate(spec({"vs_sim_cosine": None}), board) == []
    assert evaluate(spec(), [metrics("logits", 0.995, None)]) == []  # a sim item has no board to compare
    with pytest.raises(SpecError, match=r"checks\.vs_sim_cosine\.outputs\.nope: the model has no output 'nope'"):
        evaluate(spec({"vs_sim_cosine": {"outputs": {"nope": 0.9}}}), board)



def names_for(boards, wanted_index, count, prefix):
    """Spec names whose items the pool assigns to boards[wanted_index] first (its order is by crc32)."""
    import zlib

    found = []
    for n in range(1000):
        name = f"{prefix}{n}"
        if zlib.crc32(f"{name}/2.5.0".encode()) % len(boards) == wanted_index:
            found.append(name)
        if len(found) == count:
            return found
    raise AssertionError("no such names")


def test_items_of_a_board_that_does_not_answer_run_on_the_healthy_one(board_pytest, pytester, own_port, tmp_path):
    closed = socket.socket()  # bound, never listening: refused, and the port stays ours
    closed.bind(("127.0.0.1", 0))
    dead, healthy = f"127.0.0.1:{closed.getsockname()[1]}", f"127.0.0.1:{own_port().port}"
    moved = names_for([dead, healthy], 0, 2, "m")
    stayed = names_for([dead, healthy], 1, 1, "s")
    specs(pytester.path, *moved, *stayed)
    report = tmp_path / "report.json"
    try:
        result, _ = board_pytest(f"--rknn-json={report}", board=f"{dead},{healthy}")
    finally:
        closed.close()
    result.assert_outcomes(passed=6)
    items = json_items(report)
    for name in moved + stayed:
        assert items[name, "board"]["fingerprint"]["board"]["address"] == healthy, name
    for name in moved:
        [warning] = [w for w in items[name, "board"]["warnings"] if w.startswith("ran on board")]
        assert warning.startswith(f"ran on board {healthy} instead: board {dead} did not answer ("), warning
    assert not any(w.startswith("ran on board") for w in items[stayed[0], "board"]["warnings"])
    result.stdout.fnmatch_lines([f"board {healthy}: 3 items, 2 of them for a board that did not answer or went away"])


def test_a_board_that_goes_away_in_a_job_hands_that_job_and_the_rest_to_the_next_board(
        board_pytest, pytester, own_port, tmp_path):
    first, second = own_port(), own_port()
    boards = [f"127.0.0.1:{first.port}", f"127.0.0.1:{second.port}"]
    doomed, later = names_for(boards, 0, 2, "d")
    specs(pytester.path, doomed, later)
    board_pytest.board.set_fault(f"{doomed}.rknn", "power_off")  # the first board's port goes away in this job
    report = tmp_path / "report.json"
    result, _ = board_pytest(f"--rknn-json={report}", "--rknn-board-connect-timeout=2", board=",".join(boards))
    first.power_on()
    result.assert_outcomes(passed=4)
    items = json_items(report)
    warning = next(w for w in items[doomed, "board"]["warnings"] if w.startswith("ran on board"))
    assert warning.startswith(f"ran on board {boards[1]} instead: board {boards[0]} went away during the job ("), warning
    assert LOST in warning
    assert all(items[name, "board"]["fingerprint"]["board"]["address"] == boards[1] for name in (doomed, later))
    result.stdout.fnmatch_lines([f"board {boards[1]}: 2 items, 2 of them for a board that did not answer or went away"])
