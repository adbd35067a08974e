"""The second test board: the real rknn-toolkit-lite2 aarch64 wheel from PyPI in an arm64 Debian
root filesystem, run by qemu-user with no binfmt_misc and no chroot, behind the same loopback sshd
as the double (testboard.py). It has no NPU: it runs the real import, RKNNLite(), load_rknn and
init_runtime up to the point where a real board without a driver, librknnrt or device tree fails.

    base = ensure_base(cache)                 # build once (.ci/setup does it), then reuse
    python = make_board_python(folder, base, "no-driver", librknnrt=True)

A board Python is a /bin/sh wrapper: `qemu-aarch64-static -L ROOT BASE/rootfs/usr/bin/python3`.
With -L, qemu looks an absolute path up in ROOT first and falls back to the host's when ROOT has no
such file. ROOT is a folder of symlinks into the shared rootfs, plus what this board has:
/proc/device-tree/compatible, /usr/lib/librknnrt.so (the stand-in, librknnrt_standin.c) and
/dev/dri/renderD129. It also has /.dockerenv, so every board is a container to rknn-toolkit-lite2,
on any host: the -L fallback shows the host's /.dockerenv where there is one (there is one here),
and no file in ROOT can hide it. See README.md, "The arm64 board".

    python tests/board/arm64board.py [CACHE]   # build or check the cached rootfs; what .ci/setup runs
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shlex
import shutil
import subprocess
import sys
import time
import zipfile
from pathlib import Path
from typing import Optional, Sequence

HERE = Path(__file__).resolve().parent
STANDIN_SOURCE = HERE / "librknnrt_standin.c"
QEMU = "/usr/bin/qemu-aarch64-static"
MMDEBSTRAP = "/usr/bin/mmdebstrap"
CROSS_GCC = "/usr/bin/aarch64-linux-gnu-gcc"
SUITE = "bookworm"  # Debian 12: Python 3.11, so the cp311 wheel fits
PACKAGES = ("python3", "python3-numpy", "python3-psutil", "python3-ruamel.yaml")  # the wheel's Requires-Dist
LITE_VERSION = "2.5.0"
HOST_SOURCES = Path("/etc/apt/sources.list.d/debian.sources")  # the host's Debian archive, as set up here
RK3588_TREE = ("rockchip,rk3588-evb1-lp4-v10", "rockchip,rk3588")
BUILD_SECONDS = 900


class BoardBuildError(RuntimeError):
    pass


def cache_key() -> str:
    """What goes into the rootfs: this file (packages, versions, steps) and the stand-in's source."""
    digest = hashlib.sha256(Path(__file__).read_bytes() + STANDIN_SOURCE.read_bytes())
    return digest.hexdigest()[:16]


def ensure_base(cache: Path) -> Path:
    """The folder holding rootfs/ and librknnrt-standin.so, built when missing. Raises BoardBuildError
    saying what is missing or what failed."""
    cache = Path(cache)
    base = cache / f"arm64-board-{cache_key()}"
    if (base / "ready").exists():
        return base
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / "arm64-board.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
        if not (base / "ready").exists():
            _build(cache, base)
    return base


def _build(cache: Path, base: Path) -> None:
    missing = [tool for tool in (QEMU, MMDEBSTRAP, CROSS_GCC) if not os.access(tool, os.X_OK)]
    if missing:
        raise BoardBuildError(f"the arm64 test board needs {', '.join(missing)}: run `bash .ci/setup` (it installs "
                              f"qemu-user-static, mmdebstrap, gcc-aarch64-linux-gnu and libc6-dev-arm64-cross)")
    work = cache / f"{base.name}.building"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    rootfs = work / "rootfs"
    mirror = [str(HOST_SOURCES)] if HOST_SOURCES.exists() else []
    _run([MMDEBSTRAP, "--variant=extract", "--architectures=arm64", f"--include={','.join(PACKAGES)}", SUITE,
          str(rootfs), *mirror], "mmdebstrap")
    # Maintainer scripts do not run in an extract: make the links update-alternatives would make.
    multiarch = rootfs / "usr/lib/aarch64-linux-gnu"
    for name, folder in (("libblas.so.3", "blas"), ("liblapack.so.3", "lapack")):
        (multiarch / name).symlink_to(f"{folder}/{name}")
    with zipfile.ZipFile(lite_wheel(cache / "wheels")) as wheel:  # a wheel is a zip of site-packages
        wheel.extractall(rootfs / "usr/lib/python3/dist-packages")
    _run([CROSS_GCC, "-shared", "-fPIC", "-O2", "-Wall", "-o", str(work / "librknnrt-standin.so"),
          str(STANDIN_SOURCE)], "the stand-in librknnrt.so")
    _run([QEMU, "-L", str(rootfs), str(rootfs / "usr/bin/python3"), "-c", "import numpy, rknnlite.api"],
         "importing numpy and rknnlite in the arm64 Python")
    (work / "ready").write_text(f"{SUITE} {' '.join(PACKAGES)} rknn-toolkit-lite2=={LITE_VERSION}\n")
    for old in cache.glob("arm64-board-*"):
        if old.is_dir() and old != work:
            shutil.rmtree(old, ignore_errors=True)  # an older key's rootfs, about 110 MB
    work.rename(base)


def lite_wheel(folder: Path) -> Path:
    """The rknn-toolkit-lite2 aarch64 cp311 wheel, downloaded from PyPI once."""
    pattern = f"rknn_toolkit_lite2-{LITE_VERSION}-cp311-*aarch64*.whl"
    if not sorted(folder.glob(pattern)):
        folder.mkdir(parents=True, exist_ok=True)
        _run([sys.executable, "-m", "pip", "download", f"rknn-toolkit-lite2=={LITE_VERSION}", "--no-deps",
              "--only-binary=:all:", "--platform", "manylinux_2_17_aarch64", "--python-version", "3.11",
              "--implementation", "cp", "-d", str(folder), "-q", "--disable-pip-version-check"],
             f"downloading rknn-toolkit-lite2 {LITE_VERSION}")
    return sorted(folder.glob(pattern))[-1]


def _run(command: Sequence[str], what: str) -> None:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=BUILD_SECONDS, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BoardBuildError(f"building the arm64 test board: {what} took over {BUILD_SECONDS} s") from None
    if done.returncode != 0:
        raise BoardBuildError(f"building the arm64 test board: {what} failed (exit {done.returncode}): "
                              f"{(done.stdout + done.stderr)[-3000:]}")


def make_board_python(folder: Path, base: Path, name: str, device_tree: Optional[Sequence[str]] = RK3588_TREE,
                      librknnrt: bool = True, npu_device: bool = True) -> Path:
    """`folder/NAME/python`: the board Python of one personality. `device_tree` is the list of
    /proc/device-tree/compatible entries (None: no device tree), `librknnrt` puts the stand-in at
    /usr/lib/librknnrt.so, `npu_device` an (empty) /dev/dri/renderD129 where lite2 looks for it."""
    home = Path(folder) / name
    shutil.rmtree(home, ignore_errors=True)
    root = home / "root"
    _link_rootfs(base / "rootfs", root)
    (root / ".dockerenv").touch()
    if device_tree:
        tree = root / "proc/device-tree"
        tree.mkdir(parents=True)
        (tree / "compatible").write_bytes(b"".join(entry.encode() + b"\0" for entry in device_tree))
        (tree / "model").write_bytes(b"pytest-rknn arm64 test board (qemu-user)\0")
    if librknnrt:
        shutil.copy(base / "librknnrt-standin.so", root / "usr/lib/librknnrt.so")
    if npu_device:
        (root / "dev/dri").mkdir(parents=True)
        (root / "dev/dri/renderD129").touch()
    python = home / "python"
    python.write_text("\n".join([
        "#!/bin/sh",
        f"# Board Python of the pytest-rknn arm64 test board, personality {name!r}.",
        "unset PYTHONPATH PYTHONHOME",  # the host's would mislead the board's Python
        f'exec {QEMU} -L {shlex.quote(str(root))} {shlex.quote(str(base / "rootfs/usr/bin/python3"))} "$@"',
    ]) + "\n")
    python.chmod(0o755)
    return python


def _link_rootfs(rootfs: Path, root: Path) -> None:
    """Symlinks into the shared rootfs, with real /usr and /usr/lib folders so that a board can have a
    librknnrt.so of its own. No /dev, /proc or /tmp: those stay the host's."""
    not_linked = {".": {"usr", "dev", "proc", "tmp"}, "usr": {"lib"}, "usr/lib": set()}
    for folder, skip in not_linked.items():
        (root / folder).mkdir(parents=True, exist_ok=True)
        for entry in (rootfs / folder).iterdir():
            if entry.name not in skip:
                (root / folder / entry.name).symlink_to(entry)


def main(argv: Sequence[str]) -> int:
    cache = Path(argv[0]) if argv else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "pytest-rknn"
    started = time.monotonic()
    try:
        base = ensure_base(cache)
    except BoardBuildError as exc:
        print(f"setup: {exc}", file=sys.stderr)
        return 1
    print(f"setup: arm64 test board in {base} ({time.monotonic() - started:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
