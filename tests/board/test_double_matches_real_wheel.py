"""Self-test of the rknnlite double against the real rknn-toolkit-lite2 wheel from PyPI: the same
constants, method signatures and Python-side log lines. The wheel is aarch64-only, so its
rknn_lite.py is read, never imported. (What librknnrt.so says is not in any wheel; those lines
are checked against RKNN-FACTS.md in tests/test_board_classify.py.)"""

import ast
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from conftest import TOOLKIT_CACHE

from .testboard import DOUBLE

LITE_VERSION = "2.5.0"
LEFT_OUT = {"list_devices", "list_support_target_platform"}  # adb/ntb host-side helpers (see rknn_lite.py)


@pytest.fixture(scope="module")
def real_rknn_lite() -> str:
    """rknnlite/api/rknn_lite.py of the real wheel, downloaded once into the toolkit cache."""
    folder = Path(TOOLKIT_CACHE) / "wheels"
    wheels = sorted(folder.glob(f"rknn_toolkit_lite2-{LITE_VERSION}-cp311-*aarch64*.whl"))
    if not wheels:
        folder.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", f"rknn-toolkit-lite2=={LITE_VERSION}",
                               "--no-deps", "--only-binary=:all:", "--platform", "manylinux_2_17_aarch64",
                               "--python-version", "3.11", "--implementation", "cp", "-d", str(folder), "-q",
                               "--disable-pip-version-check"], capture_output=True, text=True, timeout=300,
                              stdin=subprocess.DEVNULL)
        wheels = sorted(folder.glob(f"rknn_toolkit_lite2-{LITE_VERSION}-cp311-*aarch64*.whl"))
        assert wheels, f"cannot download rknn-toolkit-lite2 {LITE_VERSION} from PyPI: {done.stderr[-2000:]}"
    with zipfile.ZipFile(wheels[-1]) as wheel:
        return wheel.read("rknnlite/api/rknn_lite.py").decode()


def api(source: str):
    """Constants and method signatures of class RKNNLite, and the literal log messages it writes."""
    tree = ast.parse(source)
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "RKNNLite")
    constants = {t.id: ast.literal_eval(n.value) for n in cls.body if isinstance(n, ast.Assign)
                 for t in n.targets if isinstance(t, ast.Name)}
    methods = {}
    for node in cls.body:
        if isinstance(node, ast.FunctionDef):
            args = node.args
            defaults = [None] * (len(args.args) - len(args.defaults)) + [ast.unparse(d) for d in args.defaults]
            methods[node.name] = [(a.arg, d) for a, d in zip(args.args, defaults)]
    messages = set()
    for node in ast.walk(cls):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr in ("e", "w", "i", "d")
                and node.args and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
            messages.add(node.args[0].value)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format"
                and isinstance(node.func.value, ast.Constant)):
            messages.add(node.func.value.value)
    return constants, methods, messages


def test_the_double_has_the_real_constants_and_signatures(real_rknn_lite):
    real_constants, real_methods, _ = api(real_rknn_lite)
    constants, methods, _ = api((DOUBLE / "rknnlite" / "api" / "rknn_lite.py").read_text())
    assert constants == real_constants
    assert {name: methods[name] for name in real_methods if name not in LEFT_OUT} == \
        {name: sig for name, sig in real_methods.items() if name not in LEFT_OUT}
    assert set(methods) <= set(real_methods)  # nothing the real class lacks


def test_every_log_line_the_double_writes_from_python_is_one_the_real_wheel_writes(real_rknn_lite):
    _, _, real_messages = api(real_rknn_lite)
    _, _, messages = api((DOUBLE / "rknnlite" / "api" / "rknn_lite.py").read_text())
    assert messages - real_messages == set()
    # The lines pytest-rknn's classification and tests rely on are really there.
    for line in ("Catch exception when init runtime!", "Catch exception when setting inputs.",
                 "Catch exception when getting outputs.", "Catch exception when set npu core mode.",
                 "Invalid RKNN model path: {}"):
        assert line in real_messages, line
