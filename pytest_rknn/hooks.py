"""Hooks that pytest-rknn calls; implement them in a conftest.py or plugin."""

import pluggy

hookspec = pluggy.HookspecMarker("pytest")


@hookspec
def pytest_rknn_artifact_built(spec, version, rknn_path, sha256):
    """A model was built and simulated: `rknn_path` (a pathlib.Path) is the exported
    `.rknn` file, `sha256` its hex digest, `version` the rknn-toolkit2 version and
    `spec` the per-version Spec. Called once per (spec, version), before the file goes
    to any board. Use it to archive artifacts."""
