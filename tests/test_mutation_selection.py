"""benchmarks/mutation_unit_tests.py, the pytest plugin of mutation runs: it keeps the unit tests, and a run
whose unit test starts a process fails, unless that test is marked `starts_process`."""

from pathlib import Path

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"

TESTS = """
import subprocess
import sys

import pytest


def test_plain():
    pass


def test_e2e(pytester):
    pass


@pytest.mark.starts_process
def test_own_program():
    subprocess.run([sys.executable, "-c", "pass"], check=True)


def test_sneaky():
    subprocess.run([sys.executable, "-c", "pass"], check=True)
"""


def test_the_mutation_run_keeps_unit_tests_and_refuses_one_that_starts_a_process(pytester, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", str(BENCHMARKS))
    pytester.makeini("[pytest]\nmarkers = starts_process: starts a program of its own\n")
    pytester.makepyfile(test_sample=TESTS)
    result = pytester.runpytest_subprocess("-p", "mutation_unit_tests", "-p", "no:cacheprovider", "-v",
                                           f"--rootdir={pytester.path}")
    result.stdout.fnmatch_lines(["*test_plain PASSED*", "*test_own_program PASSED*", "*test_sneaky PASSED*",
                                 "*1 deselected*"])
    assert "test_e2e" not in result.stdout.str()
    result.stderr.fnmatch_lines(["mutation_unit_tests: these selected tests started a process; add them to "
                                 "SLOW_TESTS:", "  test_sample.py::test_sneaky: *"])
    assert "test_own_program" not in result.stderr.str() and result.ret == 1
