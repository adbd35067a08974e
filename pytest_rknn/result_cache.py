"""A content-keyed cache of simulator jobs: same bytes in, same outputs out, no worker started.

A job is keyed by what decides its outputs (the simulator is deterministic; the .rknn bytes are
not, so they are never part of the key): the ONNX model and its external data files, job.json
without paths and names, the input arrays, the calibration files' contents, the toolkit
environment's packages and the worker's code. Checks and thresholds are not in it.

A job's entry is a folder `ROOT/ab/KEY/` holding result.json, outputs.npz, log.txt, model.rknn, the
manifest `entry.json` (the sha256 of every file) and `last_used`, touched on every hit. The judge's
measurements of a job (metrics, detection figures and pictures; not the verdict, which the
thresholds decide) are entries of their own under `ROOT/measurements/`, so a warm rerun neither
starts a worker nor runs onnxruntime (see measurement.py). Entries are written in a temporary
folder beside them and renamed into place, so a reader sees a whole entry or none; an entry whose
files do not match its manifest is a miss and is removed. When the cache outgrows its limit, the
least recently used entries go first, jobs and measurements alike.
"""

from __future__ import annotations

import contextlib
import fcntl
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
from .onnx_model import ModelInfo, file_sha256, read_model_info
from .toolkit.client import WORKER

FORMAT = 1  # bump when the entry layout or the key material changes
DEFAULT_MAX_BYTES = 2 * 1024 ** 3
HIT, MISS, OFF = "hit", "miss", "off"
FILES = ("outputs.npz", "log.txt", "result.json")
RKNN = "model.rknn"
MANIFEST = "entry.json"
USED = "last_used"
MODELS = "models"  # ROOT/models/SHA256.json: a model's facts (onnx_model.model_info)
IMAGES = "images"  # ROOT/images/KEY.npz: decoded image inputs (decoded_images.py)
MEASUREMENTS = "measurements"  # ROOT/measurements/ab/KEY/: measurement.json and the pictures
MEASUREMENT = "measurement.json"
LOCKS = "locks"  # ROOT/locks/KEY.lock: held while a job of that key runs, so concurrent runs run it once
ENVIRONMENTS = "environments"  # ROOT/environments/NAME.json: a toolkit environment's packages, by signature
STALE_TEMP_SECONDS = 3600.0  # a temporary folder this old is left from a run that was killed
NOT_IN_KEY = ("model", "dataset", "rknn_name")  # paths and names: they do not decide the outputs

# Run in the toolkit environment: its Python and every installed distribution, without importing rknn.
_ENV_SCRIPT = ("import importlib.metadata as m, json, sys; "
               "print(json.dumps([sys.version, sorted(f\"{d.metadata['Name']}=={d.version}\" "
               "for d in m.distributions())]))")


class Corrupt(Exception):
    """An entry that is not whole: a missing file, or one whose bytes do not match the manifest."""


def model_digest(model_path: Path, model: Optional[ModelInfo] = None) -> dict:
    """The model's bytes and its external data files' (from `model`, the model's facts, when given)."""
    model = model or read_model_info(Path(model_path))
    folder = Path(model_path).parent
    return {"onnx": model.sha256, "external_data": {name: file_sha256(folder / name) for name in model.external_data}}


def inputs_digest(inputs_npz: Path) -> str:
    """The arrays of inputs.npz (name, dtype, shape, bytes), not the zip's bytes."""
    with np.load(inputs_npz, allow_pickle=False) as data:
        return arrays_digest({name: data[name] for name in data.files})


def arrays_digest(arrays: Dict[str, np.ndarray]) -> str:
    """What inputs_digest gives for an inputs.npz holding `arrays`, from the arrays in memory."""
    digest = hashlib.sha256()
    for name in sorted(arrays):
        array = np.ascontiguousarray(arrays[name])
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


def key_material(job_dir: Path, environment: list, worker_sha256: str, inputs: Optional[str] = None,
                 model: Optional[ModelInfo] = None) -> dict:
    """Everything that decides a job's outputs, as plain JSON. `inputs`: arrays_digest of the job's
    inputs, and `model`: the model's facts, when the caller has them at hand (else inputs.npz and
    the model are read)."""
    job = json.loads((job_dir / "job.json").read_text())
    return {
        "format": FORMAT,
        "job": {k: v for k, v in sorted(job.items()) if k not in NOT_IN_KEY},
        "model": model_digest(Path(job["model"]), model),
        "inputs": inputs or inputs_digest(job_dir / "inputs.npz"),
        "dataset": dataset_digest(job.get("dataset")),
        "environment": environment,
        "worker": worker_sha256,
    }


def key_of(material: dict) -> str:
    return hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()


def environment_signature(python: str) -> Optional[dict]:
    """What changes whenever a virtualenv's Python or packages change, read without starting it: its
    pyvenv.cfg and the names (with versions) of its site-packages' entries. None when `python` is not
    in a virtualenv laid out as venv makes them."""
    prefix = Path(python).parent.parent
    config = prefix / "pyvenv.cfg"
    site = sorted(prefix.glob("lib/python*/site-packages"))
    if not config.is_file() or len(site) != 1:
        return None
    return {"python": str(Path(python).absolute()), "pyvenv.cfg": config.read_text(),
            "site-packages": sorted(entry.name for entry in site[0].iterdir()),
            "mtime_ns": site[0].stat().st_mtime_ns}


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
    if not value * scale >= 1 or value == float("inf"):  # under a byte is none (0.5 would be a cache of 0 bytes)
        raise ValueError(f"'{text}' is not a positive size (write e.g. 2G)")
    return int(value * scale)


def _link(source: Path, target: Path) -> None:
    """A hard link where the file system allows it, else a copy."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def _remove(path: Path) -> None:
    """A folder with what is in it, or a file."""
    if path.is_dir():
        shutil.rmtree(path, ignore_errors=True)
    else:
        path.unlink(missing_ok=True)


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

    @property
    def _root(self) -> Path:
        """The root of an enabled cache: what needs it has a key, and only an enabled cache gives keys."""
        if self.root is None:
            raise RuntimeError("the result cache is off")
        return self.root

    def key_for(self, python: str, job_dir: Path, inputs: Optional[str] = None,
                model: Optional[ModelInfo] = None) -> Optional[str]:
        """The job's key, or None (with a warning) when one of its parts cannot be read. `inputs` and
        `model`: as for key_material."""
        if not self.enabled:
            return None
        try:
            return key_of(key_material(job_dir, self._environment(python), self._worker_sha256, inputs, model))
        except Exception as exc:  # an unreadable model or calibration file, a broken environment
            _warn(f"no key for {job_dir}, so it is neither looked up nor stored: {exc}")
            return None

    def _environment(self, python: str) -> list:
        with self._lock:
            if python not in self._environments:
                self._environments[python] = self._recorded_environment(python)
            return self._environments[python]

    def _recorded_environment(self, python: str) -> list:
        """environment_of(python), which starts that Python, kept on disk while the environment's
        signature stays the same (a warm rerun must not start a Python per version)."""
        signature = environment_signature(python)
        if signature is None:
            return environment_of(python)
        record = self._root / ENVIRONMENTS / f"{hashlib.sha256(signature['python'].encode()).hexdigest()[:16]}.json"
        try:
            stored = json.loads(record.read_text())
            if stored["signature"] == signature:
                return stored["environment"]
        except (OSError, ValueError, KeyError, TypeError):
            pass  # none yet, or unreadable: ask the Python
        environment = environment_of(python)
        try:
            record.parent.mkdir(parents=True, exist_ok=True)
            write_atomic(record, json.dumps({"signature": signature, "environment": environment}))
        except OSError:
            pass  # asked again next time
        return environment

    @property
    def models_folder(self) -> Optional[Path]:
        return self.root / MODELS if self.root is not None else None

    @property
    def images_folder(self) -> Optional[Path]:
        return self.root / IMAGES if self.root is not None else None

    def entry(self, key: str) -> Path:
        return self._root / key[:2] / key

    def measurement_entry(self, key: str) -> Path:
        return self._root / MEASUREMENTS / key[:2] / key

    # ------------------------------------------------------------ look up

    def load(self, key: Optional[str], job_dir: Path, rknn_name: str, outputs: bool = True) -> Optional[dict]:
        """On a hit, the stored files go into job_dir and the stored result.json is returned (with
        `rknn` renamed to rknn_name); None on a miss. Without `outputs`, outputs.npz is neither checked
        nor placed (see load_outputs). A corrupt entry is a miss and is removed."""
        if key is None or not self.entry(key).is_dir():
            return None
        entry, started = self.entry(key), time.monotonic()
        names = [*FILES, RKNN] if outputs else [n for n in (*FILES, RKNN) if n != "outputs.npz"]
        try:
            manifest = self._verify(entry, names)
            if set(manifest["files"]) != set(FILES) | {RKNN}:
                raise Corrupt(f"{MANIFEST} lists {sorted(manifest['files'])}")
            result = json.loads((entry / "result.json").read_text())
        except (OSError, ValueError, KeyError, TypeError, AttributeError, Corrupt) as exc:  # any damage
            _warn(f"entry {entry} is unusable, so the job runs again: {exc}")
            self.discard(entry)
            return None
        result["rknn"] = rknn_name
        result["timings"] = dict(result.get("timings", {}), cache=time.monotonic() - started)
        try:
            self._place_all(entry, job_dir, result, outputs)
        except OSError as exc:  # e.g. evicted by another run since it was checked
            _warn(f"cannot copy entry {entry} into {job_dir}, so the job runs again: {exc}")
            return None
        return result

    @contextlib.contextmanager
    def running(self, key: Optional[str]):
        """Held while the job of `key` runs: another process (a pytest-xdist worker, a second run on the same
        cache) that wants the same job waits, then finds it stored. Nothing to hold without a key."""
        if key is None:
            yield
            return
        folder = self._ensure_root() / LOCKS
        folder.mkdir(exist_ok=True)
        with open(folder / f"{key}.lock", "w") as handle:
            fcntl.flock(handle, fcntl.LOCK_EX)  # released when the file closes, also when the process dies
            yield

    def load_outputs(self, key: Optional[str], job_dir: Path) -> bool:
        """outputs.npz of a hit that load(outputs=False) placed; False (and the job runs again) when the
        entry has gone or is damaged since."""
        if key is None or not self.entry(key).is_dir():
            return False
        entry = self.entry(key)
        try:
            self._verify(entry, ["outputs.npz"])
            _link(entry / "outputs.npz", job_dir / "outputs.npz")
        except (OSError, ValueError, KeyError, TypeError, AttributeError, Corrupt) as exc:
            _warn(f"entry {entry} is unusable, so the job runs again: {exc}")
            self.discard(entry)
            return False
        return True

    def _place_all(self, entry: Path, job_dir: Path, result: dict, outputs: bool) -> None:
        job_dir.mkdir(parents=True, exist_ok=True)
        if outputs:
            _link(entry / "outputs.npz", job_dir / "outputs.npz")  # the large one; nothing writes into it
        shutil.copyfile(entry / "log.txt", job_dir / "log.txt")
        shutil.copyfile(entry / RKNN, job_dir / result["rknn"])  # a copy: a hook may change its artifact
        write_atomic(job_dir / "result.json", json.dumps(result, indent=1))
        (entry / USED).touch()

    def _verify(self, entry: Path, names) -> dict:
        """The entry's manifest, once the files `names` are checked against it."""
        manifest = json.loads((entry / MANIFEST).read_text())
        if manifest.get("format") != FORMAT:
            raise Corrupt(f"format {manifest.get('format')}, not {FORMAT}")
        for name in names:
            if name not in manifest["files"]:
                raise Corrupt(f"{MANIFEST} does not list {name}")
            if file_sha256(entry / name) != manifest["files"][name]:
                raise Corrupt(f"{name} does not match its sha256 in {MANIFEST}")
        return manifest

    # ------------------------------------------------------------ measurements

    def load_measurement(self, key: Optional[str], job_dir: Path) -> Optional[dict]:
        """A stored measurement, its files (the detection check's pictures) copied into job_dir under
        the names they were stored with; None on a miss. A corrupt entry is a miss and is removed."""
        if key is None or not self.measurement_entry(key).is_dir():
            return None
        entry = self.measurement_entry(key)
        try:
            manifest = json.loads((entry / MANIFEST).read_text())
            manifest = self._verify(entry, list(manifest["files"]))
            record = json.loads((entry / MEASUREMENT).read_text())
            for name in manifest["files"]:
                if name != MEASUREMENT:
                    (job_dir / name).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(entry / name, job_dir / name)
            (entry / USED).touch()
        except (OSError, ValueError, KeyError, TypeError, AttributeError, Corrupt) as exc:
            _warn(f"measurement {entry} is unusable, so it is measured again: {exc}")
            self.discard(entry)
            return None
        return record

    def store_measurement(self, key: Optional[str], record: dict, job_dir: Path, files: List[str]) -> None:
        """Keep a measurement with its files (paths relative to job_dir)."""
        if key is None:
            return
        try:
            record_file = Path(tempfile.mkdtemp(prefix=".tmp-record-", dir=self._ensure_root())) / MEASUREMENT
            record_file.write_text(json.dumps(record))
            sources = {MEASUREMENT: record_file, **{name: job_dir / name for name in files}}
            try:
                self._write_entry(self.measurement_entry(key), key, sources)
            finally:
                shutil.rmtree(record_file.parent, ignore_errors=True)
            self.evict()
        except OSError as exc:
            _warn(f"cannot store the measurement of {job_dir} in {self.root}: {exc}")

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
        sources = {**{name: job_dir / name for name in FILES}, RKNN: job_dir / result["rknn"]}
        self._write_entry(self.entry(key), key, sources, rknn_sha256=result.get("rknn_sha256"))

    def _ensure_root(self) -> Path:
        self._root.mkdir(parents=True, exist_ok=True)
        return self._root

    def _write_entry(self, entry: Path, key: str, sources: Dict[str, Path], rknn_sha256: Optional[str] = None) -> None:
        """Copy `sources` (entry name -> file) into a temporary folder, then rename it to `entry`."""
        temp = Path(tempfile.mkdtemp(prefix=f".tmp-{key[:12]}-", dir=self._ensure_root()))
        try:
            for name, source in sources.items():
                (temp / name).parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(source, temp / name)
            files = {name: file_sha256(temp / name) for name in sources}
            if rknn_sha256 is not None and files[RKNN] != rknn_sha256:
                raise OSError(f"{sources[RKNN].name} changed since the worker exported it (sha256 differs)")
            write_atomic(temp / MANIFEST, json.dumps({"format": FORMAT, "key": key, "files": files}, indent=1))
            (temp / USED).touch()
            entry.parent.mkdir(parents=True, exist_ok=True)
            os.rename(temp, entry)  # atomic; fails if another run stored this key first
        except OSError:
            if not entry.is_dir():
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
        _remove(trash)

    def entries(self) -> List[Tuple[float, int, Path]]:
        """(last used, bytes, path) of every whole entry: job and measurement folders, decoded images."""
        found = []
        for entry in [*self._root.glob("??/*"), *self._root.glob(f"{MEASUREMENTS}/??/*")]:
            if entry.name.startswith("."):
                continue
            try:
                size = sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
                found.append(((entry / USED).stat().st_mtime, size, entry))
            except OSError:
                continue  # being removed by another run
        for images in self._root.glob(f"{IMAGES}/*.npz"):
            try:
                stat = images.stat()
                if not images.name.startswith("."):
                    found.append((stat.st_mtime, stat.st_size, images))
            except OSError:
                continue
        return found

    def evict(self) -> None:
        """Least recently used entries go until the cache holds at most max_bytes; temporary folders
        left by killed runs go too."""
        now = time.time()
        for temp in [*self._root.glob(".tmp-*"), *self._root.glob("??/.trash-*"),
                     *self._root.glob(f"{MEASUREMENTS}/??/.trash-*"), *self._root.glob(f"{IMAGES}/.*")]:
            try:
                if now - temp.stat().st_mtime > STALE_TEMP_SECONDS:
                    _remove(temp)
            except OSError:
                continue
        for lock in self._root.glob(f"{LOCKS}/*.lock"):  # one per job ever run: the old ones nobody holds go
            try:
                if now - lock.stat().st_mtime > STALE_TEMP_SECONDS:
                    with open(lock) as handle:
                        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                        lock.unlink()
            except OSError:  # held (BlockingIOError), or gone already
                continue
        entries = sorted(self.entries())
        total = sum(size for _, size, _ in entries)
        for _, size, entry in entries:
            if total <= self.max_bytes:
                break
            self.discard(entry)
            total -= size
