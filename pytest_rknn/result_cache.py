"""A content-keyed cache of simulator jobs: same bytes in, same outputs out, no worker started.

A job is keyed by what decides its outputs (the simulator is deterministic; the .rknn bytes are
not, so they are never part of the key): the ONNX model and its external data files, job.json
without paths and names, the input arrays, the calibration files' contents, the toolkit
environment's packages and the worker's code. Checks and thresholds are not in it.

An entry is a folder `ROOT/ab/KEY/` holding result.json, outputs.npz, log.txt, model.rknn, the
manifest `entry.json` (the sha256 of every file) and `last_used`, touched on every hit. It is
written in a temporary folder beside it and renamed into place, so a reader sees a whole entry
or none; an entry whose files do not match its manifest is a miss and is removed. When the cache
outgrows its limit, the least recently used entries go first.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from .atomic import write_atomic
from .errors import RknnWarning
from .onnx_model import file_sha256
from .toolkit.client import WORKER

FORMAT = 1  # bump when the entry layout or the key material changes
DEFAULT_MAX_BYTES = 2 * 1024 ** 3
HIT, MISS, OFF = "hit", "miss", "off"
FILES = ("outputs.npz", "log.txt", "result.json")
RKNN = "model.rknn"
MANIFEST = "entry.json"
USED = "last_used"
STALE_TEMP_SECONDS = 3600.0  # a temporary folder this old is left from a run that was killed
NOT_IN_KEY = ("model", "dataset", "rknn_name")  # paths and names: they do not decide the outputs

# Run in the toolkit environment: its Python and every installed distribution, without importing rknn.
_ENV_SCRIPT = ("import importlib.metadata as m, json, sys; "
               "print(json.dumps([sys.version, sorted(f\"{d.metadata['Name']}=={d.version}\" "
               "for d in m.distributions())]))")


class Corrupt(Exception):
    """An entry that is not whole: a missing file, or one whose bytes do not match the manifest."""


def external_data_files(model_path: Path) -> List[str]:
    """The external data files an ONNX model names (relative to its folder), sorted."""
    import onnx

    model = onnx.load(str(model_path), load_external_data=False)
    graphs, locations = [model.graph], set()
    while graphs:
        graph = graphs.pop()
        tensors = list(graph.initializer)
        for node in graph.node:
            for attribute in node.attribute:
                tensors += [attribute.t] if attribute.HasField("t") else []
                tensors += list(attribute.tensors)
                graphs += ([attribute.g] if attribute.HasField("g") else []) + list(attribute.graphs)
        for tensor in tensors:
            if tensor.data_location == onnx.TensorProto.EXTERNAL:
                locations.update(e.value for e in tensor.external_data if e.key == "location")
    return sorted(locations)


def model_digest(model_path: Path) -> dict:
    folder = Path(model_path).parent
    return {"onnx": file_sha256(model_path),
            "external_data": {name: file_sha256(folder / name) for name in external_data_files(model_path)}}


def inputs_digest(inputs_npz: Path) -> str:
    """The arrays of inputs.npz (name, dtype, shape, bytes), not the zip's bytes."""
    digest = hashlib.sha256()
    with np.load(inputs_npz, allow_pickle=False) as data:
        for name in sorted(data.files):
            array = np.ascontiguousarray(data[name])
            digest.update(f"{name}\0{array.dtype.str}\0{array.shape}\0".encode())
            digest.update(array.tobytes())
    return digest.hexdigest()


def dataset_digest(dataset: Optional[str]) -> Optional[List[List[Tuple[str, str]]]]:
    """Each calibration sample as (suffix, sha256 of the file) per input: contents, not paths. The
    suffix stays, since the toolkit reads .npy and images differently."""
    if not dataset:
        return None
    rows = [line.split(" ") for line in Path(dataset).read_text().splitlines() if line.strip()]
    return [[(Path(p).suffix.lower(), file_sha256(Path(p))) for p in row] for row in rows]


def key_material(job_dir: Path, environment: list, worker_sha256: str) -> dict:
    """Everything that decides a job's outputs, as plain JSON."""
    job = json.loads((job_dir / "job.json").read_text())
    return {
        "format": FORMAT,
        "job": {k: v for k, v in sorted(job.items()) if k not in NOT_IN_KEY},
        "model": model_digest(Path(job["model"])),
        "inputs": inputs_digest(job_dir / "inputs.npz"),
        "dataset": dataset_digest(job.get("dataset")),
        "environment": environment,
        "worker": worker_sha256,
    }


def key_of(material: dict) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def environment_of(python: str) -> list:
    """The toolkit environment's Python version and installed packages, as that Python reports them."""
    done = subprocess.run([python, "-c", _ENV_SCRIPT], capture_output=True, text=True, timeout=120,
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        raise OSError(f"{python} could not list its packages (exit status {done.returncode})")
    return json.loads(done.stdout)


def parse_size(text: str) -> int:
    """`2G`, `500M`, `64K` or a number of bytes."""
    units = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3, "T": 1024 ** 4}
    plain = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = units.get(plain[-1:], 1)
    try:
        value = float(plain[:-1] if plain[-1:] in units else plain)
    except ValueError:
        raise ValueError(f"'{text}' is not a size (write e.g. 2G, 500M or a number of bytes)") from None
    if not value > 0 or value == float("inf"):
        raise ValueError(f"'{text}' is not a positive size (write e.g. 2G)")
    return int(value * scale)


def _link(source: Path, target: Path) -> None:
    """A hard link where the file system allows it, else a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _warn(message: str) -> None:
    warnings.warn(RknnWarning(f"result cache: {message}"), stacklevel=3)


class ResultCache:
    """Look up a simulator job before its worker starts; store it after a successful run.
    Never raises: whatever goes wrong with the cache, the job runs as without it."""

    def __init__(self, root: Optional[Path], max_bytes: int = DEFAULT_MAX_BYTES):
        self.root = Path(root) if root is not None else None
        self.max_bytes = max_bytes
        self._environments: Dict[str, list] = {}
        self._lock = threading.Lock()
        self._worker_sha256 = file_sha256(WORKER)

    @property
    def enabled(self) -> bool:
        return self.root is not None

    def key_for(self, python: str, job_dir: Path) -> Optional[str]:
        """The job's key, or None (with a warning) when one of its parts cannot be read."""
        if not self.enabled:
            return None
        try:
            return key_of(key_material(job_dir, self._environment(python), self._worker_sha256))
        except Exception as exc:  # an unreadable model or calibration file, a broken environment
            _warn(f"no key for {job_dir}, so it is neither looked up nor stored: {exc}")
            return None

    def _environment(self, python: str) -> list:
        with self._lock:
            if python not in self._environments:
                self._environments[python] = environment_of(python)
            return self._environments[python]

    def entry(self, key: str) -> Path:
        return self.root / key[:2] / key

    # ------------------------------------------------------------ look up

    def load(self, key: Optional[str], job_dir: Path, rknn_name: str) -> Optional[dict]:
        """On a hit, the stored files go into job_dir and the stored result.json is returned (with
        `rknn` renamed to rknn_name); None on a miss. A corrupt entry is a miss and is removed."""
        if key is None or not self.entry(key).is_dir():
            return None
        entry, started = self.entry(key), time.monotonic()
        try:
            self._verify(entry)
            result = json.loads((entry / "result.json").read_text())
        except (OSError, ValueError, KeyError, TypeError, AttributeError, Corrupt) as exc:  # any damage
            _warn(f"entry {entry} is unusable, so the job runs again: {exc}")
            self.discard(entry)
            return None
        result["rknn"] = rknn_name
        result["timings"] = dict(result.get("timings", {}), cache=time.monotonic() - started)
        try:
            self._place_all(entry, job_dir, result)
        except OSError as exc:  # e.g. evicted by another run since it was checked
            _warn(f"cannot copy entry {entry} into {job_dir}, so the job runs again: {exc}")
            return None
        return result

    def _place_all(self, entry: Path, job_dir: Path, result: dict) -> None:
        job_dir.mkdir(parents=True, exist_ok=True)
        _link(entry / "outputs.npz", job_dir / "outputs.npz")  # the large one; nothing writes into it
        shutil.copyfile(entry / "log.txt", job_dir / "log.txt")
        shutil.copyfile(entry / RKNN, job_dir / result["rknn"])  # a copy: a hook may change its artifact
        write_atomic(job_dir / "result.json", json.dumps(result, indent=1))
        (entry / USED).touch()

    def _verify(self, entry: Path) -> None:
        manifest = json.loads((entry / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            raise Corrupt(f"format {manifest.get('format')}, not {FORMAT}")
        for name, expected in manifest["files"].items():
            if file_sha256(entry / name) != expected:
                raise Corrupt(f"{name} does not match its sha256 in {MANIFEST}")
        if set(manifest["files"]) != set(FILES) | {RKNN}:
            raise Corrupt(f"{MANIFEST} lists {sorted(manifest['files'])}")

    # ------------------------------------------------------------ store

    def store(self, key: Optional[str], job_dir: Path, result: dict) -> None:
        """Keep a successful job (status ok, every sample inferred); any other result is never stored."""
        if key is None or result.get("status") != "ok" or result.get("failed_samples"):
            return
        try:
            self._store(key, job_dir, result)
            self.evict()
        except OSError as exc:
            _warn(f"cannot store {job_dir} in {self.root}: {exc}")

    def _store(self, key: str, job_dir: Path, result: dict) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        temp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=self.root))
        try:
            for name in FILES:
                shutil.copyfile(job_dir / name, temp / name)
            shutil.copyfile(job_dir / result["rknn"], temp / RKNN)
            files = {name: file_sha256(temp / name) for name in (*FILES, RKNN)}
            if files[RKNN] != result.get("rknn_sha256"):
                raise OSError(f"{result['rknn']} changed since the worker exported it (sha256 differs)")
            write_atomic(temp / MANIFEST, json.dumps({"format": FORMAT, "key": key, "files": files}, indent=1))
            (temp / USED).touch()
            self.entry(key).parent.mkdir(exist_ok=True)
            os.rename(temp, self.entry(key))  # atomic; fails if another run stored this key first
        except OSError:
            if not self.entry(key).is_dir():
                raise
        finally:
            shutil.rmtree(temp, ignore_errors=True)  # gone after the rename; a lost race leaves it

    # ------------------------------------------------------------ size

    def discard(self, entry: Path) -> None:
        """Remove an entry: renamed away first (atomic), so no reader sees half of it."""
        trash = entry.parent / f".trash-{entry.name}-{os.getpid()}-{threading.get_ident()}"
        try:
            os.rename(entry, trash)
        except OSError:
            return  # gone already: evicted or discarded by another run
        shutil.rmtree(trash, ignore_errors=True)

    def entries(self) -> List[Tuple[float, int, Path]]:
        """(last used, bytes, folder) of every whole entry."""
        found = []
        for entry in self.root.glob("??/*"):
            if entry.name.startswith("."):
                continue
            try:
                size = sum(f.stat().st_size for f in entry.iterdir())
                found.append(((entry / USED).stat().st_mtime, size, entry))
            except OSError:
                continue  # being removed by another run
        return found

    def evict(self) -> None:
        """Least recently used entries go until the cache holds at most max_bytes; temporary folders
        left by killed runs go too."""
        now = time.time()
        for temp in [*self.root.glob(".tmp-*"), *self.root.glob("??/.trash-*")]:
            try:
                if now - temp.stat().st_mtime > STALE_TEMP_SECONDS:
                    shutil.rmtree(temp, ignore_errors=True)
            except OSError:
                continue
        entries = sorted(self.entries())
        total = sum(size for _, size, _ in entries)
        for _, size, entry in entries:
            if total <= self.max_bytes:
                break
            self.discard(entry)
            total -= size
