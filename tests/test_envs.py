"""Toolkit environments: option parsing, pip configuration, user environments, provisioning."""

import os
import subprocess
import sys

import pytest

from pytest_rknn.errors import ENV, RknnError
from pytest_rknn.toolkit import envs
from pytest_rknn.toolkit.envs import Provisioner, ToolkitRequest, parse_toolkit_option


def test_the_toolkit_option_takes_versions_and_existing_pythons():
    assert parse_toolkit_option("2.3.2, 2.5.0") == [ToolkitRequest("2.3.2"), ToolkitRequest("2.5.0")]
    assert parse_toolkit_option("2.3.2=/opt/env/bin/python") == [ToolkitRequest("2.3.2", "/opt/env/bin/python")]


@pytest.mark.parametrize("value, words", [("2.5", "not a version"), ("2.5.0,2.5.0", "named twice"), (",", "no version")])
def test_bad_toolkit_options_are_env_errors_that_say_what_to_write(value, words):
    with pytest.raises(RknnError) as info:
        parse_toolkit_option(value)
    assert info.value.failure_class == ENV and words in info.value.message and "--rknn-toolkit" in info.value.message


def test_pip_configuration_is_passed_on_to_uv(monkeypatch, tmp_path):
    # Only this test's configuration: no PIP_* variable and no user or XDG config of this machine. pip always
    # reads /etc/pip.conf as well, so the assertions look only for what this test's file and variables add.
    for name in [n for n in os.environ if n.startswith("PIP_")]:
        monkeypatch.delenv(name)
    for name in ("HOME", "XDG_CONFIG_HOME", "XDG_CONFIG_DIRS"):
        monkeypatch.setenv(name, str(tmp_path / "nothing"))
    wheels, env_wheels = tmp_path / "wheels", tmp_path / "env-wheels"  # pip splits PIP_* values on blanks
    a, b = f"file://{tmp_path}/a", f"file://{tmp_path}/b"
    config = tmp_path / "pip.conf"
    config.write_text(f"[global]\nfind-links = {wheels}\nextra-index-url = {a} {b}\n")
    monkeypatch.setenv("PIP_CONFIG_FILE", str(config))
    monkeypatch.setenv("PIP_INDEX_URL", f"file://{tmp_path}/index")
    args = envs.pip_sources()
    values = lambda flag: [args[i + 1] for i, arg in enumerate(args) if arg == flag]
    assert str(wheels) in values("--find-links")
    assert [url for url in values("--extra-index-url") if url.startswith(f"file://{tmp_path}/")] == [a, b]
    assert values("--index-url") == [f"file://{tmp_path}/index"]  # one index; the variable wins over any file
    monkeypatch.setenv("PIP_FIND_LINKS", str(env_wheels))
    assert str(env_wheels) in envs.pip_sources()


def test_torch_comes_from_a_local_cpu_wheel_when_there_is_one_else_the_cpu_index(tmp_path):
    assert envs.torch_source_args(["--find-links", str(tmp_path)], None) == ["--extra-index-url", envs.TORCH_CPU_INDEX]
    tag = f"cp{sys.version_info.major}{sys.version_info.minor}"
    (tmp_path / f"torch-2.13.0+cpu-{tag}-{tag}-manylinux_2_28_x86_64.whl").write_bytes(b"")
    assert envs.torch_source_args(["--find-links", str(tmp_path)], None) == []
    assert envs.torch_source_args([], str(tmp_path)) == ["--find-links", str(tmp_path)]


def test_an_environment_without_the_toolkit_is_refused_with_the_fix(tmp_path):
    provisioner = Provisioner(tmp_path)
    with pytest.raises(RknnError) as info:
        provisioner.python_for(ToolkitRequest("2.5.0", sys.executable))
    assert info.value.failure_class == ENV
    assert "rknn-toolkit2 is not installed" in info.value.message and sys.executable in info.value.message


def test_a_version_that_cannot_be_provisioned_fails_once_with_its_log(tmp_path):
    provisioner = Provisioner(tmp_path)
    with pytest.raises(RknnError) as info:
        provisioner.python_for(ToolkitRequest("9.9.9"))
    assert info.value.failure_class == ENV
    assert "cannot provision rknn-toolkit2 9.9.9" in info.value.message
    assert str(tmp_path / "provision-9.9.9.log") in info.value.message
    with pytest.raises(RknnError) as again:  # remembered: dependent items fail fast, the same way
        provisioner.python_for(ToolkitRequest("9.9.9"))
    assert again.value is info.value


def test_a_provisioned_environment_is_reused_and_really_holds_its_version(toolkit_cache):
    provisioner = Provisioner(toolkit_cache)
    python = provisioner.python_for(ToolkitRequest("2.5.0"))
    assert envs.installed_version(python) == "2.5.0"
    versions = subprocess.run([python, "-c", "import importlib.metadata as m; print(m.version('onnx'), "
                               "m.version('numpy'), m.version('torch'))"], capture_output=True, text=True).stdout
    onnx_version, numpy_version, torch_version = versions.split()
    assert tuple(map(int, onnx_version.split(".")[:2])) <= (1, 18)
    assert numpy_version == "1.26.4" and torch_version.startswith("2.13.0")
    # An existing environment named explicitly is accepted when its version matches.
    assert Provisioner(toolkit_cache).python_for(ToolkitRequest("2.5.0", python)) == python
    with pytest.raises(RknnError) as info:
        Provisioner(toolkit_cache).python_for(ToolkitRequest("2.3.2", python))
    assert info.value.failure_class == ENV and "has rknn-toolkit2 2.5.0, not 2.3.2" in info.value.message
