"""The result cache: what moves a job's key, how entries are stored, found, evicted and refused, and
end to end with the real toolkit (a warm rerun, a threshold, a calibration image, a corrupt entry,
--rknn-no-cache, a board item of a hit)."""

import errno
import fcntl
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest

from conftest import EXAMPLES, FIXTURES, IMAGES, MODELS, UV_CACHE, write_spec

from pytest_rknn import decoded_images, measurement, result_cache
from pytest_rknn.errors import RknnWarning
from pytest_rknn.onnx_model import model_info, read_model_info
from pytest_rknn.result_cache import (DEFAULT_MAX_BYTES, FORMAT, HIT, MANIFEST, MISS, RKNN, STALE_TEMP_SECONDS, USED,
                                      ResultCache, arrays_digest, environment_of, environment_signature, inputs_digest,
                                      key_material, key_of, parse_size)
from pytest_rknn.spec import _deep_merge, spec_from_dict
from pytest_rknn.toolkit import worker

ENVIRONMENT = ["3.11.2", ["numpy==1.26.4", "rknn-toolkit2==2.5.0"]]
WORKER_SHA = "w" * 64


def sha256(path):
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def cache_states(report):
    """{(spec, backend): cache} from a JSON report."""
    return {(i["spec"], i["backend"]): i["cache"] for i in json.loads(Path(report).read_text())["items"]}


def json_items(report):
    return {(i["spec"], i["version"], i["backend"]): i for i in json.loads(Path(report).read_text())["items"]}


def entries(root):
    return sorted(p for p in Path(root).glob("??/*") if not p.name.startswith("."))


# ---------------------------------------------------------------- the key


def make_job(folder, model=MODELS / "cnn.onnx", calibration=("img_00.png", "img_01.png"), compressed=False,
             **job_fields):
    """A job folder as the runner writes it: the model and calibration files in it, job.json, inputs.npz."""
    folder.mkdir(parents=True, exist_ok=True)
    shutil.copy(model, folder / "model.onnx")
    calib = folder / "calib"
    calib.mkdir(exist_ok=True)
    for name in calibration:
        shutil.copy(IMAGES / name, calib / name)
    (folder / "dataset.txt").write_text("".join(f"{calib / n}\n" for n in calibration))
    job = {"model": str(folder / "model.onnx"), "target": "rk3588", "config": {"mean_values": [[0, 0, 0]]},
           "quantize": True, "dataset": str(folder / "dataset.txt"), "rknn_name": "cnn.rknn", "verbose": False,
           "samples": 2, "data_format": ["nhwc"], **job_fields}
    (folder / "job.json").write_text(json.dumps(job))
    arrays = {f"s{s}_i0": np.full((1, 32, 32, 3), s, np.uint8) for s in range(2)}
    (np.savez_compressed if compressed else np.savez)(folder / "inputs.npz", **arrays)
    return folder


def key(folder, environment=ENVIRONMENT, worker=WORKER_SHA):
    return key_of(key_material(folder, environment, worker))


def edit_job(folder, **fields):
    job = json.loads((folder / "job.json").read_text())
    (folder / "job.json").write_text(json.dumps(dict(job, **fields)))


def test_the_key_moves_with_what_decides_the_outputs_and_only_with_that(tmp_path):
    base = key(make_job(tmp_path / "base"))
    assert key(make_job(tmp_path / "again")) == base  # other paths, same bytes
    assert key(make_job(tmp_path / "zip", compressed=True)) == base  # the arrays count, not the zip's bytes
    renamed = make_job(tmp_path / "renamed")
    edit_job(renamed, rknn_name="other.rknn")
    assert key(renamed) == base

    moved = {}
    for field, value in [("target", "rk3566"), ("config", {"mean_values": [[1, 1, 1]]}), ("quantize", False),
                         ("verbose", True), ("data_format", ["nchw"]), ("samples", 1)]:
        folder = make_job(tmp_path / field)
        edit_job(folder, **{field: value})
        moved[field] = key(folder)
    inputs = make_job(tmp_path / "inputs")
    np.savez(inputs / "inputs.npz", s0_i0=np.full((1, 32, 32, 3), 0, np.uint8),
             s1_i0=np.full((1, 32, 32, 3), 2, np.uint8))
    moved["inputs"] = key(inputs)
    dtype = make_job(tmp_path / "dtype")
    np.savez(dtype / "inputs.npz", **{f"s{s}_i0": np.full((1, 32, 32, 3), s, np.float32) for s in range(2)})
    moved["input dtype"] = key(dtype)
    model = make_job(tmp_path / "model", model=MODELS / "two_input.onnx")
    moved["model"] = key(model)
    image = make_job(tmp_path / "image")
    shutil.copy(IMAGES / "img_05.png", image / "calib" / "img_01.png")  # same path, other bytes
    moved["calibration image"] = key(image)
    moved["calibration order"] = key(make_job(tmp_path / "order", calibration=("img_01.png", "img_00.png")))
    moved["environment"] = key(make_job(tmp_path / "env"), environment=["3.11.2", ["numpy==1.26.3"]])
    moved["worker"] = key(make_job(tmp_path / "worker"), worker="v" * 64)
    assert {name: k for name, k in moved.items() if k == base} == {}
    assert len(set(moved.values())) == len(moved)


def test_every_input_of_a_multi_input_calibration_sample_is_in_the_key(tmp_path):
    """A two-input model's dataset.txt has one column per input: a new file for the second input alone,
    or the two columns swapped, is another calibration and another key."""

    def two_input_job(name, second=("img_02.png", "img_03.png"), swap=False):
        folder = make_job(tmp_path / name, calibration=("img_00.png", "img_01.png") + tuple(second))
        calib = folder / "calib"
        rows = [(calib / "img_00.png", calib / second[0]), (calib / "img_01.png", calib / second[1])]
        (folder / "dataset.txt").write_text("".join(f"{b} {a}\n" if swap else f"{a} {b}\n" for a, b in rows))
        return folder

    base = key(two_input_job("base"))
    assert key(two_input_job("again")) == base
    changed = two_input_job("second")
    shutil.copy(IMAGES / "img_05.png", changed / "calib" / "img_03.png")  # the second input's file of sample 1
    assert key(changed) != base
    assert key(two_input_job("other", second=("img_02.png", "img_04.png"))) != base
    assert key(two_input_job("swapped", swap=True)) != base
    material = key_material(two_input_job("material"), ENVIRONMENT, WORKER_SHA)
    assert [len(row) for row in material["dataset"]] == [2, 2]


def test_external_data_files_are_part_of_the_key(tmp_path):
    model = onnx.load(str(MODELS / "cnn.onnx"))
    folder = tmp_path / "ext"
    folder.mkdir()
    onnx.save_model(model, str(folder / "with_data.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    job = make_job(tmp_path / "job", model=folder / "with_data.onnx")
    edit_job(job, model=str(folder / "with_data.onnx"))  # next to its weights.bin
    material = key_material(job, ENVIRONMENT, WORKER_SHA)
    assert list(material["model"]["external_data"]) == ["weights.bin"]
    before = key(job)
    data = bytearray((folder / "weights.bin").read_bytes())
    data[0] ^= 1
    (folder / "weights.bin").write_bytes(bytes(data))
    assert key(job) != before


def test_the_key_material_is_every_part_that_decides_the_outputs_and_nothing_else(tmp_path):
    """The whole material of a job, each part computed on its own: what a reader of a cache entry's key
    can rely on (and what a change of the layout must bump FORMAT for)."""
    from pytest_rknn.onnx_model import file_sha256
    from pytest_rknn.result_cache import FORMAT

    folder = make_job(tmp_path / "job", verbose=True, rknn_name="cnn.rknn")
    job = json.loads((folder / "job.json").read_text())
    material = key_material(folder, ENVIRONMENT, WORKER_SHA)
    calib = folder / "calib"
    assert material == {
        "format": FORMAT,
        "job": {k: job[k] for k in sorted(job) if k not in ("model", "dataset", "rknn_name")},
        "model": {"onnx": file_sha256(folder / "model.onnx"), "external_data": {}},
        "inputs": inputs_digest(folder / "inputs.npz"),
        "dataset": [[(".png", file_sha256(calib / "img_00.png"))], [(".png", file_sha256(calib / "img_01.png"))]],
        "environment": ENVIRONMENT,
        "worker": WORKER_SHA,
    }
    assert list(material["job"]) == sorted(material["job"])
    assert key_of(material) == hashlib.sha256(json.dumps(material, sort_keys=True).encode()).hexdigest()
    assert key_material(folder, ENVIRONMENT, WORKER_SHA, inputs="given")["inputs"] == "given"  # not read again
    fp16 = make_job(tmp_path / "fp16", quantize=False, dataset=None)
    assert key_material(fp16, ENVIRONMENT, WORKER_SHA)["dataset"] is None


def fake_venv(folder, packages=("numpy-1.26.4.dist-info", "rknn"), script=None):
    """A virtualenv laid out as venv makes it; its `python` a shell script (`script`) or a plain file."""
    python = folder / "bin" / "python"
    python.parent.mkdir(parents=True)
    python.write_text(script or "not a program\n")
    python.chmod(0o755)
    (folder / "pyvenv.cfg").write_text("home = /usr/bin\nversion = 3.11.7\n")
    site = folder / "lib" / "python3.11" / "site-packages"
    site.mkdir(parents=True)
    for name in packages:
        (site / name).mkdir()
    return python, site


def test_an_environments_signature_changes_with_its_packages_and_needs_a_venv_layout(tmp_path):
    python, site = fake_venv(tmp_path / "env")
    signature = environment_signature(str(python))
    assert signature == {"python": str(python), "pyvenv.cfg": "home = /usr/bin\nversion = 3.11.7\n",
                         "site-packages": ["numpy-1.26.4.dist-info", "rknn"], "mtime_ns": site.stat().st_mtime_ns}
    (site / "numpy-1.26.4.dist-info").rename(site / "numpy-1.26.3.dist-info")
    assert environment_signature(str(python))["site-packages"] == ["numpy-1.26.3.dist-info", "rknn"]
    (tmp_path / "env" / "pyvenv.cfg").write_text("home = /opt/python3.11/bin\n")
    assert environment_signature(str(python))["pyvenv.cfg"] == "home = /opt/python3.11/bin\n"
    (tmp_path / "env" / "lib" / "python3.12" / "site-packages").mkdir(parents=True)
    assert environment_signature(str(python)) is None  # two site-packages: not a venv's layout
    bare, _ = fake_venv(tmp_path / "bare")
    (tmp_path / "bare" / "pyvenv.cfg").unlink()
    assert environment_signature(str(bare)) is None


# A toolkit environment's Python: this test's own Python, run through a script that counts its runs.
LISTING = f'''#!/bin/sh
echo run >> "$(dirname "$0")/runs"
exec {sys.executable} "$@"
'''


@pytest.mark.starts_process  # a shell script standing in for the toolkit environment's Python
def test_an_environment_is_asked_once_and_kept_while_its_signature_holds(tmp_path):
    python, site = fake_venv(tmp_path / "env", script=LISTING)
    runs = python.parent / "runs"
    listed = environment_of(str(python))
    assert listed[0] == sys.version and f"numpy=={np.__version__}" in listed[1] and listed[1] == sorted(listed[1])
    assert runs.read_text().count("run") == 1
    cache = ResultCache(tmp_path / "cache")
    job = make_job(tmp_path / "job")
    key = cache.key_for(str(python), job)
    assert key == key_of(key_material(job, listed, cache._worker_sha256)) and runs.read_text().count("run") == 2
    given = cache.key_for(str(python), job, inputs=inputs_digest(job / "inputs.npz"),
                          model=read_model_info(job / "model.onnx"))  # what the runner has at hand
    assert given == key
    assert cache.key_for(str(python), job) == key and runs.read_text().count("run") == 2  # kept in memory
    assert ResultCache(tmp_path / "cache").key_for(str(python), job) == key  # on disk: a new session asks nothing
    assert runs.read_text().count("run") == 2
    (site / "torch").mkdir()  # a package installed: asked again
    assert ResultCache(tmp_path / "cache").key_for(str(python), job) == key and runs.read_text().count("run") == 3
    [record] = (tmp_path / "cache" / "environments").glob("*.json")
    record.write_text("{not json")  # unreadable: asked again, and written whole again
    assert ResultCache(tmp_path / "cache").key_for(str(python), job) == key and runs.read_text().count("run") == 4
    assert json.loads(record.read_text())["environment"] == listed
    bare = tmp_path / "bare" / "python"  # not in a virtualenv: asked every time, nothing recorded
    bare.parent.mkdir()
    bare.write_text(LISTING)
    bare.chmod(0o755)
    assert ResultCache(tmp_path / "other").key_for(str(bare), job) == key
    assert (bare.parent / "runs").read_text().count("run") == 1 and not (tmp_path / "other" / "environments").exists()


@pytest.mark.starts_process
def test_a_python_that_cannot_list_its_packages_gives_no_key_and_a_warning(tmp_path):
    python, _ = fake_venv(tmp_path / "env", script="#!/bin/sh\nexit 3\n")
    with pytest.raises(OSError, match=r"could not list its packages \(exit status 3\)"):
        environment_of(str(python))
    job = make_job(tmp_path / "job")
    with pytest.warns(RknnWarning, match=rf"result cache: no key for {job}, so it is neither looked up nor stored: "):
        assert ResultCache(tmp_path / "cache").key_for(str(python), job) is None


# ---------------------------------------------------------------- entries


def fake_run(job_dir, payload=b"rknn bytes", status="ok", failed=()):
    """What a worker leaves in a job folder."""
    job_dir.mkdir(parents=True, exist_ok=True)
    (job_dir / "cnn.rknn").write_bytes(payload)
    np.savez(job_dir / "outputs.npz", s0_o0=np.arange(6, dtype=np.float32))
    (job_dir / "log.txt").write_text("toolkit noise\n")
    result = {"status": status, "rknn": "cnn.rknn", "rknn_sha256": hashlib.sha256(payload).hexdigest(),
              "timings": {"build": 1.5}, "failed_samples": list(failed), "toolkit_version": "2.5.0"}
    (job_dir / "result.json").write_text(json.dumps(result))
    return result


def test_the_digest_of_arrays_in_memory_is_the_digest_of_the_inputs_written(tmp_path):
    """The runner keys a job by its arrays in memory; a job folder written by an older run, read back, gets
    the same key."""
    folder = make_job(tmp_path / "job", compressed=True)
    with np.load(folder / "inputs.npz") as data:
        arrays = {name: data[name] for name in data.files}
    assert arrays_digest(arrays) == inputs_digest(folder / "inputs.npz")
    assert key_material(folder, ENVIRONMENT, WORKER_SHA, arrays_digest(arrays)) == key_material(folder, ENVIRONMENT,
                                                                                                WORKER_SHA)
    arrays["s1_i0"] = arrays["s1_i0"] + 1
    assert arrays_digest(arrays) != inputs_digest(folder / "inputs.npz")


def test_a_models_facts_are_kept_by_its_bytes_and_a_damaged_record_is_read_again(tmp_path):
    folder = tmp_path / "models"
    for name in ("cnn.onnx", "two_input.onnx"):
        fresh = read_model_info(MODELS / name)
        assert model_info(MODELS / name, folder) == fresh  # read and kept
        assert model_info(MODELS / name, folder) == fresh  # from the record
        assert (folder / f"{fresh.sha256}.json").is_file()
    record = folder / f"{read_model_info(MODELS / 'cnn.onnx').sha256}.json"
    record.write_text('{"format": 1, "inputs": "garbage"}')
    assert model_info(MODELS / "cnn.onnx", folder) == read_model_info(MODELS / "cnn.onnx")
    assert model_info(MODELS / "cnn.onnx", None) == read_model_info(MODELS / "cnn.onnx")  # nothing kept


def test_decoded_images_are_kept_by_their_bytes_and_settings_and_a_damaged_file_is_a_miss(tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for name in ("img_00.png", "img_01.png"):
        shutil.copy(IMAGES / name, images / name)
    paths = [str(images / "img_00.png"), str(images / "img_01.png")]
    settings = {"size": (32, 32), "letterbox": None, "pad": 114, "color": "rgb", "layout": "nhwc", "dtype": "uint8"}
    key = decoded_images.key(paths, settings)
    assert decoded_images.key(paths, dict(settings, color="bgr")) != key
    assert decoded_images.key(paths[::-1], settings) != key
    folder = tmp_path / "cache" / "images"
    assert decoded_images.load(folder, key, 2) is None
    arrays = [np.full((1, 32, 32, 3), i, np.uint8) for i in range(2)]
    decoded_images.store(folder, key, arrays)
    assert [a.tolist() for a in decoded_images.load(folder, key, 2)] == [a.tolist() for a in arrays]
    assert [p.name for p in folder.iterdir()] == [f"{key}.npz"]  # no temporary file stays
    shutil.copy(IMAGES / "img_09.png", images / "img_01.png")  # same name, other bytes
    assert decoded_images.key(paths, settings) != key
    (folder / f"{key}.npz").write_bytes(b"PK\x03\x04 torn")
    assert decoded_images.load(folder, key, 2) is None


def test_a_stored_entry_is_found_whole_and_placed_in_the_job_folder(tmp_path):
    cache = ResultCache(tmp_path / "cache")
    result = fake_run(tmp_path / "run")
    cache.store("ab" * 32, tmp_path / "run", result)
    [entry] = entries(tmp_path / "cache")
    assert entry == cache.entry("ab" * 32) and not list((tmp_path / "cache").glob(".tmp-*"))
    manifest = json.loads((entry / MANIFEST).read_text())
    assert manifest["files"][RKNN] == result["rknn_sha256"]

    hit = cache.load("ab" * 32, tmp_path / "job", "renamed.rknn")
    assert hit["rknn"] == "renamed.rknn" and hit["rknn_sha256"] == result["rknn_sha256"]
    assert hit["timings"]["build"] == 1.5 and hit["timings"]["cache"] >= 0  # as recorded, plus the look-up
    assert sha256(tmp_path / "job" / "renamed.rknn") == result["rknn_sha256"]
    assert json.loads((tmp_path / "job" / "result.json").read_text())["rknn"] == "renamed.rknn"
    with np.load(tmp_path / "job" / "outputs.npz") as data:
        assert data["s0_o0"].tolist() == [0, 1, 2, 3, 4, 5]
    assert cache.load("cd" * 32, tmp_path / "other", "x.rknn") is None  # never stored: a miss


def test_failures_and_failed_samples_are_never_stored(tmp_path):
    cache = ResultCache(tmp_path / "cache")
    cache.store("a1" * 32, tmp_path / "build", fake_run(tmp_path / "build", status="BUILD"))
    cache.store("a2" * 32, tmp_path / "spec", fake_run(tmp_path / "spec", status="SPEC"))
    cache.store("a3" * 32, tmp_path / "none", fake_run(tmp_path / "none", failed=[1]))
    cache.store(None, tmp_path / "nokey", fake_run(tmp_path / "nokey"))
    assert entries(tmp_path / "cache") == []


def test_an_rknn_that_is_not_what_the_worker_exported_is_not_stored(tmp_path):
    cache = ResultCache(tmp_path / "cache")
    result = fake_run(tmp_path / "run")
    (tmp_path / "run" / "cnn.rknn").write_bytes(b"changed since")
    with pytest.warns(Warning, match="sha256 differs"):
        cache.store("ab" * 32, tmp_path / "run", result)
    assert entries(tmp_path / "cache") == [] and not list((tmp_path / "cache").glob(".tmp-*"))


@pytest.mark.parametrize("damage", ["truncated outputs", "garbage result", "missing rknn", "garbage manifest",
                                    "manifest of another shape"])
def test_a_damaged_entry_is_a_miss_and_is_removed(tmp_path, damage):
    cache = ResultCache(tmp_path / "cache")
    cache.store("ab" * 32, tmp_path / "run", fake_run(tmp_path / "run"))
    entry = cache.entry("ab" * 32)
    if damage == "truncated outputs":
        data = (entry / "outputs.npz").read_bytes()
        (entry / "outputs.npz").write_bytes(data[:len(data) // 2])
    elif damage == "garbage result":
        (entry / "result.json").write_text("{not json")
    elif damage == "missing rknn":
        (entry / RKNN).unlink()
    elif damage == "garbage manifest":
        (entry / MANIFEST).write_bytes(b"\x00\xff")
    else:
        (entry / MANIFEST).write_text("[]")
    with pytest.warns(Warning, match="unusable, so the job runs again"):
        assert cache.load("ab" * 32, tmp_path / "job", "cnn.rknn") is None
    assert not entry.exists() and entries(tmp_path / "cache") == []


def test_a_lost_race_keeps_the_first_entry_and_leaves_no_temporary_folder(tmp_path):
    cache = ResultCache(tmp_path / "cache")
    cache.store("ab" * 32, tmp_path / "first", fake_run(tmp_path / "first", payload=b"first"))
    cache.store("ab" * 32, tmp_path / "second", fake_run(tmp_path / "second", payload=b"second"))
    assert (cache.entry("ab" * 32) / RKNN).read_bytes() == b"first"
    assert [p.name for p in (tmp_path / "cache").iterdir()] == ["ab"]


def test_the_least_recently_used_entries_go_when_the_cache_is_full(tmp_path):
    cache = ResultCache(tmp_path / "cache", max_bytes=10 ** 9)
    keys = [f"{i:02x}" * 32 for i in range(4)]
    for i, k in enumerate(keys):
        cache.store(k, tmp_path / f"run{i}", fake_run(tmp_path / f"run{i}", payload=bytes([i]) * 1000))
        os.utime(cache.entry(k) / USED, (time.time() - 100 + i, time.time() - 100 + i))
    assert cache.load(keys[0], tmp_path / "job0", "x.rknn") is not None  # the oldest, used now
    size = sum(s for _, s, _ in cache.entries()) // 4
    cache.max_bytes = 2 * size + size // 2  # room for two
    stale = tmp_path / "cache" / ".tmp-left-by-a-killed-run"
    stale.mkdir()
    stale_images = cache.images_folder / ".tmp-left-by-a-killed-run.npz"
    stale_images.parent.mkdir()
    stale_images.write_bytes(b"half")
    for path in (stale, stale_images):
        os.utime(path, (time.time() - 7200, time.time() - 7200))
    cache.evict()
    assert [e.name for e in entries(tmp_path / "cache")] == sorted([keys[0], keys[3]])
    assert not stale.exists() and not stale_images.exists()
    decoded_images.store(cache.images_folder, "old", [np.zeros(size, np.uint8)])  # as large as an entry
    os.utime(cache.images_folder / "old.npz", (time.time() - 200, time.time() - 200))
    cache.evict()  # the decoded images are the least recently used
    assert [e.name for e in entries(tmp_path / "cache")] == sorted([keys[0], keys[3]])
    assert not (cache.images_folder / "old.npz").exists()


def test_sizes_parse_and_a_bad_size_says_what_to_write():
    assert parse_size("2G") == DEFAULT_MAX_BYTES == parse_size("2GiB") == parse_size("2gb")
    assert parse_size("500M") == 500 * 1024 ** 2 and parse_size("1000") == 1000
    for bad in ("lots", "-1G", "0", ""):
        with pytest.raises(ValueError, match="size"):
            parse_size(bad)


def test_an_off_cache_finds_and_stores_nothing(tmp_path):
    cache = ResultCache(None)
    assert not cache.enabled and cache.key_for("python", tmp_path) is None
    assert cache.load(None, tmp_path, "x.rknn") is None


def stored_job(cache, key, folder, **run):
    """A fake run in `folder` stored under `key`: its entry and its result."""
    result = fake_run(folder, **run)
    cache.store(key, folder, result)
    return cache.entry(key), result


def messages(caught):
    return [str(w.message) for w in caught]


def age(path, seconds, now=None):
    """Set path's mtime `seconds` before `now` (default: the clock)."""
    then = (time.time() if now is None else now) - seconds
    os.utime(path, (then, then), follow_symlinks=False)


def test_a_hit_places_every_file_whole_in_the_job_folder_and_touches_last_used(tmp_path):
    """The cache root and the job folder may not exist yet (the first store makes the root and its parents);
    or the job folder exists already, as the runner writes job.json before the look-up. The manifest names
    the key and the sha256 of every file, and a store that works says nothing."""
    cache = ResultCache(tmp_path / "new" / "cache")
    key = "ab" * 32
    result = fake_run(tmp_path / "run")
    del result["timings"]  # a result with no timings: the hit has the look-up's
    (tmp_path / "run" / "result.json").write_text(json.dumps(result))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.store(key, tmp_path / "run", result)
    entry = cache.entry(key)
    assert entry == tmp_path / "new" / "cache" / "ab" / key
    files = {name: sha256(tmp_path / "run" / name) for name in ("outputs.npz", "log.txt", "result.json")}
    assert json.loads((entry / MANIFEST).read_text()) == {
        "format": FORMAT, "key": key, "files": dict(files, **{RKNN: result["rknn_sha256"]})}
    age(entry / USED, 100)
    used = (entry / USED).stat().st_mtime

    existing = make_job(tmp_path / "job")
    (existing / "outputs.npz").write_bytes(b"left by an earlier run")
    for job in (existing, tmp_path / "deep" / "er" / "job"):
        before = time.monotonic()
        hit = cache.load(key, job, "renamed.rknn")
        after = time.monotonic()
        assert hit == dict(result, rknn="renamed.rknn", timings={"cache": hit["timings"]["cache"]})
        assert 0 <= hit["timings"]["cache"] <= after - before
        worker.write_json_atomic(tmp_path / "as_the_worker_writes.json", hit)  # a hit's folder reads like a run's
        assert (job / "result.json").read_bytes() == (tmp_path / "as_the_worker_writes.json").read_bytes()
        assert (job / "renamed.rknn").read_bytes() == b"rknn bytes" and (job / "log.txt").read_text() == "toolkit noise\n"
        assert (job / "outputs.npz").stat().st_ino == (entry / "outputs.npz").stat().st_ino  # linked, not copied
        assert (entry / USED).stat().st_mtime > used
    assert json.loads((existing / "job.json").read_text())["target"] == "rk3588"  # the job's own files stay


def test_a_hit_copies_the_outputs_where_the_file_system_cannot_link(tmp_path, monkeypatch):
    cache = ResultCache(tmp_path / "cache")
    entry, _ = stored_job(cache, "ab" * 32, tmp_path / "run")

    def cross_device(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", cross_device)
    assert cache.load("ab" * 32, tmp_path / "job", "cnn.rknn") is not None
    placed = tmp_path / "job" / "outputs.npz"
    assert placed.read_bytes() == (entry / "outputs.npz").read_bytes()
    assert placed.stat().st_ino != (entry / "outputs.npz").stat().st_ino


def test_outputs_are_placed_only_when_asked_and_checked_when_they_are(tmp_path):
    """load(outputs=False) checks and places everything but outputs.npz; load_outputs places it later, or
    finds it damaged: then the entry is a miss and goes."""
    cache = ResultCache(tmp_path / "cache")
    key = "ab" * 32
    entry, result = stored_job(cache, key, tmp_path / "run")
    assert cache.load(key, tmp_path / "job", "cnn.rknn", outputs=False)["rknn_sha256"] == result["rknn_sha256"]
    assert sorted(p.name for p in (tmp_path / "job").iterdir()) == ["cnn.rknn", "log.txt", "result.json"]
    assert cache.load_outputs(key, tmp_path / "job") is True
    assert (tmp_path / "job" / "outputs.npz").read_bytes() == (tmp_path / "run" / "outputs.npz").read_bytes()

    (entry / "outputs.npz").write_bytes(b"torn")  # the outputs alone are damaged: not looked at without them
    assert cache.load(key, tmp_path / "lazy", "cnn.rknn", outputs=False) is not None
    assert not (tmp_path / "lazy" / "outputs.npz").exists()
    with pytest.warns(RknnWarning) as caught:
        assert cache.load_outputs(key, tmp_path / "lazy") is False
    assert messages(caught) == [f"result cache: entry {entry} is unusable, so the job runs again: "
                                f"outputs.npz does not match its sha256 in {MANIFEST}"]
    assert not entry.exists() and not (tmp_path / "lazy" / "outputs.npz").exists()
    assert cache.load_outputs(key, tmp_path / "lazy") is False  # gone: nothing to place
    assert cache.load_outputs(None, tmp_path / "lazy") is False and not (tmp_path / "lazy" / "outputs.npz").exists()

    entry, _ = stored_job(cache, key, tmp_path / "again")
    (entry / RKNN).write_bytes(b"other bytes")  # what is placed is still checked
    with pytest.warns(RknnWarning, match="model.rknn does not match its sha256"):
        assert cache.load(key, tmp_path / "other", "cnn.rknn", outputs=False) is None
    assert not entry.exists()


def test_a_damaged_entry_says_what_is_wrong_and_the_warning_points_at_the_caller(tmp_path):
    cache = ResultCache(tmp_path / "cache")

    def rewrite_manifest(entry, change):
        manifest = json.loads((entry / MANIFEST).read_text())
        change(manifest)
        (entry / MANIFEST).write_text(json.dumps(manifest))

    def extra_file(manifest):
        (entry / "extra.bin").write_bytes(b"x")
        manifest["files"]["extra.bin"] = hashlib.sha256(b"x").hexdigest()

    damages = {
        "format 0, not 1": lambda entry: rewrite_manifest(entry, lambda m: m.update(format=0)),
        f"{MANIFEST} does not list log.txt": lambda entry: rewrite_manifest(entry, lambda m: m["files"].pop("log.txt")),
        f"model.rknn does not match its sha256 in {MANIFEST}": lambda entry: (entry / RKNN).write_bytes(b"other"),
        f"{MANIFEST} lists ['extra.bin', 'log.txt', 'model.rknn', 'outputs.npz', 'result.json']":
            lambda entry: rewrite_manifest(entry, extra_file),
    }
    for reason, damage in damages.items():
        entry, _ = stored_job(cache, "ab" * 32, tmp_path / "run")
        damage(entry)
        with pytest.warns(RknnWarning) as caught:
            assert cache.load("ab" * 32, tmp_path / "job", "cnn.rknn") is None
        assert messages(caught) == [f"result cache: entry {entry} is unusable, so the job runs again: {reason}"]
        assert caught[0].filename != result_cache.__file__  # where the cache was used, not the cache's own code
        assert not entry.exists() and entries(tmp_path / "cache") == []


def test_a_hit_that_cannot_be_placed_runs_again_and_keeps_the_entry(tmp_path):
    cache = ResultCache(tmp_path / "cache")
    entry, _ = stored_job(cache, "ab" * 32, tmp_path / "run")
    job = tmp_path / "job"
    job.write_text("a file where the job folder should be")
    with pytest.warns(RknnWarning) as caught:
        assert cache.load("ab" * 32, job, "cnn.rknn") is None
    assert messages(caught) == [f"result cache: cannot copy entry {entry} into {job}, so the job runs again: "
                                f"[Errno 17] File exists: '{job}'"]
    assert entries(tmp_path / "cache") == [entry]  # nothing wrong with the entry


def test_the_workers_code_is_part_of_a_jobs_key(tmp_path, monkeypatch):
    monkeypatch.setattr(result_cache, "environment_of", lambda python: ENVIRONMENT)  # not a venv: asked, here stubbed
    job = make_job(tmp_path / "job")
    assert ResultCache(tmp_path / "cache").key_for(str(tmp_path / "bin" / "python"), job) == \
        key(job, worker=sha256(result_cache.WORKER))


# The pictures of a detection check, in a subfolder of the job folder (two levels, two in one folder).
PICTURES = ["overlays/yolo/a.png", "overlays/yolo/b.png"]


def measured_job(folder):
    for n, name in enumerate(PICTURES):
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_bytes(bytes([n]) * 100)
    return folder


RECORD = {"format": 1, "metrics": {"cosine": [0.999, 0.5]}, "detection": {"map50": 0.75, "overlays": PICTURES}}


def test_a_measurement_is_stored_with_its_pictures_and_read_back_whole(tmp_path):
    cache = ResultCache(tmp_path / "new" / "cache")
    key = "cd" * 32
    job = measured_job(tmp_path / "job")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        cache.store_measurement(key, RECORD, job, PICTURES)
    entry = tmp_path / "new" / "cache" / "measurements" / "cd" / key
    assert cache.measurement_entry(key) == entry and entry.is_dir()
    assert sorted(p.name for p in (tmp_path / "new" / "cache").iterdir()) == ["measurements"]  # no temporary stays
    assert json.loads((entry / MANIFEST).read_text()) == {
        "format": FORMAT, "key": key,
        "files": {"measurement.json": sha256(entry / "measurement.json"), **{p: sha256(job / p) for p in PICTURES}}}
    age(entry / USED, 100)
    used = (entry / USED).stat().st_mtime

    other = tmp_path / "other"
    other.mkdir()
    assert cache.load_measurement(key, other) == RECORD
    assert {p: (other / p).read_bytes() for p in PICTURES} == {p: (job / p).read_bytes() for p in PICTURES}
    assert not (other / "measurement.json").exists()  # the record is returned, not placed
    assert (entry / USED).stat().st_mtime > used
    assert cache.load_measurement(key, other) == RECORD  # again, over the pictures placed before

    assert cache.load_measurement("ef" * 32, other) is None and cache.load_measurement(None, other) is None
    cache.store_measurement(None, RECORD, job, PICTURES)  # no key: nothing kept
    assert [p.name for p in (tmp_path / "new" / "cache" / "measurements").iterdir()] == ["cd"]


@pytest.mark.parametrize("damage", ["changed picture", "missing picture", "garbage manifest"])
def test_a_damaged_measurement_is_a_miss_and_is_removed(tmp_path, damage):
    cache = ResultCache(tmp_path / "cache")
    cache.store_measurement("cd" * 32, RECORD, measured_job(tmp_path / "job"), PICTURES)
    entry = cache.measurement_entry("cd" * 32)
    reason = {"changed picture": f"{PICTURES[1]} does not match its sha256 in {MANIFEST}",
              "missing picture": f"[Errno 2] No such file or directory: '{entry / PICTURES[1]}'",
              "garbage manifest": "Expecting value: line 1 column 1 (char 0)"}[damage]
    if damage == "changed picture":
        (entry / PICTURES[1]).write_bytes(b"other pixels")
    elif damage == "missing picture":
        (entry / PICTURES[1]).unlink()
    else:
        (entry / MANIFEST).write_text("garbage")
    with pytest.warns(RknnWarning) as caught:
        assert cache.load_measurement("cd" * 32, tmp_path / "other") is None
    assert messages(caught) == [f"result cache: measurement {entry} is unusable, so it is measured again: {reason}"]
    assert not entry.exists() and not any((tmp_path / "cache" / "measurements" / "cd").iterdir())


def test_a_measurement_that_cannot_be_stored_warns_and_leaves_nothing(tmp_path):
    cache = ResultCache(tmp_path / "cache")
    job = measured_job(tmp_path / "job")
    with pytest.warns(RknnWarning) as caught:
        cache.store_measurement("cd" * 32, RECORD, job, [*PICTURES, "overlays/gone.png"])
    assert messages(caught) == [f"result cache: cannot store the measurement of {job} in {tmp_path / 'cache'}: "
                                f"[Errno 2] No such file or directory: '{job / 'overlays' / 'gone.png'}'"]
    assert not cache.measurement_entry("cd" * 32).exists() and not list((tmp_path / "cache").glob(".tmp-*"))


def test_an_entry_being_written_is_a_temporary_folder_in_the_cache_root(tmp_path, monkeypatch):
    """Written beside the entries (so the rename stays on one file system) and named .tmp-*, what evict
    clears when a killed run leaves one; the measurement's record is written there too."""
    root = tmp_path / "cache"
    cache = ResultCache(root)
    renames, rename = [], os.rename

    def watched(source, target):
        renames.append((Path(source), sorted(p.name for p in root.iterdir() if p.name.startswith("."))))
        rename(source, target)

    monkeypatch.setattr(os, "rename", watched)
    stored_job(cache, "ab" * 32, tmp_path / "run")
    cache.store_measurement("cd" * 32, RECORD, measured_job(tmp_path / "job"), PICTURES)
    [(job_temp, _), (measurement_temp, hidden)] = renames
    assert job_temp.parent == root and job_temp.name.startswith(".tmp-")
    assert measurement_temp.parent == root and measurement_temp.name.startswith(".tmp-")
    assert len([name for name in hidden if name.startswith(".tmp-")]) == 2  # the entry's and its record's


def test_stale_temporary_folders_and_locks_go_and_fresh_or_held_ones_stay(tmp_path, monkeypatch):
    """Older than STALE_TEMP_SECONDS: left by a killed run. Exactly that old, or held by a running job, it stays;
    one that another run removes meanwhile is skipped."""
    now = 1_700_000_000.0
    monkeypatch.setattr(time, "time", lambda: now)
    root = tmp_path / "cache"
    cache = ResultCache(root)
    for folder in ("ab", "measurements/ab", "images", "locks"):
        (root / folder).mkdir(parents=True)
    stale, kept = [], []
    for name in (".tmp-old", "ab/.trash-old", "measurements/ab/.trash-old"):
        (root / name).mkdir()
        stale.append(root / name)
    for name in (".tmp-edge", "ab/.trash-edge", ".tmp-new"):
        (root / name).mkdir()
        kept.append(root / name)
    (root / ".tmp-gone").symlink_to(root / "removed meanwhile")
    (root / "images" / ".tmp-old.npz").write_bytes(b"half")
    stale.append(root / "images" / ".tmp-old.npz")
    held = []
    for n in range(3):
        for name in (f"old{n}", f"edge{n}", f"held{n}"):
            (root / "locks" / f"{name}.lock").write_text("")
        stale.append(root / "locks" / f"old{n}.lock")
        kept += [root / "locks" / f"edge{n}.lock", root / "locks" / f"held{n}.lock"]
        held.append(open(root / "locks" / f"held{n}.lock"))
        fcntl.flock(held[-1], fcntl.LOCK_EX)
    for path in stale + kept:
        age(path, STALE_TEMP_SECONDS + 1, now)
    for path in (root / ".tmp-edge", root / "ab" / ".trash-edge", *(root / "locks").glob("edge*")):
        age(path, STALE_TEMP_SECONDS, now)
    age(root / ".tmp-new", 0, now)
    try:
        cache.evict()
    finally:
        for handle in held:
            handle.close()
    assert [p for p in stale if p.exists()] == [] and [p for p in kept if not p.exists()] == []


def test_the_cache_holds_exactly_max_bytes_and_goes_least_recently_used_first(tmp_path):
    """Sizes are the files' bytes; jobs and measurements go alike, oldest use first, and the entry just
    stored stays when it alone fits."""
    cache = ResultCache(tmp_path / "cache")
    first, _ = stored_job(cache, "ab" * 32, tmp_path / "run1", payload=b"1" * 1000)
    second, _ = stored_job(cache, "ab" + "cd" * 31, tmp_path / "run2", payload=b"2" * 1000)  # one folder, two keys
    cache.store_measurement("ef" * 32, RECORD, measured_job(tmp_path / "job"), PICTURES)
    measured = cache.measurement_entry("ef" * 32)
    for n, entry in enumerate((measured, first, second)):
        age(entry / USED, 100 - n)
    sizes = {path: size for _, size, path in cache.entries()}
    assert sizes == {entry: sum(f.stat().st_size for f in entry.rglob("*") if f.is_file())
                     for entry in (first, second, measured)}
    cache.max_bytes = sum(sizes.values())
    cache.evict()
    assert {path for _, _, path in cache.entries()} == {first, second, measured}  # exactly full: all stay
    cache.max_bytes -= 1
    cache.evict()
    assert {path for _, _, path in cache.entries()} == {first, second}  # the measurement was used least recently
    cache.max_bytes = sizes[second] + sizes[first] - 1
    cache.evict()
    assert {path for _, _, path in cache.entries()} == {second}
    cache.max_bytes = sizes[second]
    third, _ = stored_job(cache, "12" * 32, tmp_path / "run3", payload=b"2" * 1000)  # as large as the second
    assert {path for _, _, path in cache.entries()} == {third}


def test_only_whole_entries_are_counted(tmp_path):
    """Not an entry being removed (.trash-*), a folder removed while it is counted, a decoded image being
    written (.tmp-*.npz) or one removed meanwhile."""
    cache = ResultCache(tmp_path / "cache")
    root = tmp_path / "cache"
    whole = []
    for prefix in ("ab", "cd"):
        entry, _ = stored_job(cache, prefix * 32, tmp_path / f"run{prefix}")
        shutil.copytree(entry, entry.parent / f".trash-{entry.name}-1-2")
        (entry.parent / (prefix + "0" * 62)).mkdir()  # its last_used gone already
        whole.append(entry)
    cache.store_measurement("ef" * 32, RECORD, measured_job(tmp_path / "job"), PICTURES)
    whole.append(cache.measurement_entry("ef" * 32))
    (root / "images").mkdir()
    for n in range(3):
        (root / "images" / f"gone{n}.npz").symlink_to(root / "images" / "removed meanwhile")
        (root / "images" / f"whole{n}.npz").write_bytes(b"x" * 10)
        whole.append(root / "images" / f"whole{n}.npz")
    (root / "images" / ".tmp-being-written.npz").write_bytes(b"half")
    assert sorted(path for _, _, path in cache.entries()) == sorted(whole)


def test_an_entry_that_another_run_removes_at_the_same_time_is_removed_without_error(tmp_path, monkeypatch):
    cache = ResultCache(tmp_path / "cache")
    entry, _ = stored_job(cache, "ab" * 32, tmp_path / "run")
    images = tmp_path / "cache" / "images"
    images.mkdir()
    (images / "a.npz").write_bytes(b"x")
    unlink = os.unlink

    def raced(path, *, dir_fd=None):  # the other run got there first
        unlink(path, dir_fd=dir_fd)
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)

    monkeypatch.setattr(os, "unlink", raced)
    cache.discard(entry)
    cache.discard(images / "a.npz")
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "cache").rglob("*")) == ["ab", "images"]  # no trash left


def test_sizes_take_units_in_any_case_and_decimals_and_refuse_what_is_not_at_least_a_byte():
    assert [parse_size(text) for text in ("1", "0.5K", "64k", "64KB", " 3 MiB ", "1.5g", "1T", "2tib")] == \
        [1, 512, 64 * 1024, 64 * 1024, 3 * 1024 ** 2, 3 * 1024 ** 3 // 2, 1024 ** 4, 2 * 1024 ** 4]
    assert parse_size("0.001K") == 1  # a byte, just
    for bad in ("0", "-1G", "0K", "0.5", "0.0009K", "inf", "-inf", "nan", "1e400"):  # under a byte: none
        with pytest.raises(ValueError) as refused:
            parse_size(bad)
        assert str(refused.value) == f"'{bad}' is not a positive size (write e.g. 2G)"
    for bad in ("lots", "", "G", "2 GB of it"):
        with pytest.raises(ValueError) as refused:
            parse_size(bad)
        assert str(refused.value) == f"'{bad}' is not a size (write e.g. 2G, 500M or a number of bytes)"


# ---------------------------------------------------------------- end to end, real toolkit


def test_a_warm_rerun_hits_every_spec_with_identical_results(run_pytest, tmp_path):
    cache = tmp_path / "cache"
    cold_report, warm_report = tmp_path / "cold.json", tmp_path / "warm.json"
    cold, _ = run_pytest(str(EXAMPLES), f"--rknn-cache={cache}", f"--rknn-json={cold_report}")
    warm, basetemp = run_pytest(str(EXAMPLES), f"--rknn-cache={cache}", f"--rknn-json={warm_report}",
                                "--rknn-keep-outputs")  # the pictures stay
    cold.assert_outcomes(passed=7)
    warm.assert_outcomes(passed=7)
    assert set(cache_states(cold_report).values()) == {MISS} and len(entries(cache)) == 7
    assert set(cache_states(warm_report).values()) == {HIT}
    before, after = json_items(cold_report), json_items(warm_report)
    for item, old in before.items():
        new = after[item]
        assert (old["measurement_cache"], new["measurement_cache"]) == (MISS, HIT), item
        assert "reference" in old["timings"] and "reference" not in new["timings"], item  # no onnxruntime run
        assert new["metrics"] == old["metrics"] and new["outputs"] == old["outputs"], item  # same numbers, exactly
        if old["detection"]:
            assert {k: v for k, v in new["detection"].items() if k not in ("overlays", "seconds")} == \
                {k: v for k, v in old["detection"].items() if k not in ("overlays", "seconds")}, item
            pictures = [warm_report.parent / p for p in new["detection"]["overlays"]]  # the copies next to the report
            kept = Path(new["log"]).parent / "overlays"  # the originals, linked from the cache entry
            assert pictures and all(p.read_bytes() == (kept / p.name).read_bytes() for p in pictures), item
        assert new["fingerprint"]["rknn_sha256"] == old["fingerprint"]["rknn_sha256"], item  # the recorded .rknn
        assert sha256(Path(new["log"]).parent / f"{item[0]}.rknn") == old["fingerprint"]["rknn_sha256"], item
        assert new["timings"]["build"] > 0 and new["timings"]["cache"] < 5, item  # as recorded, plus the look-up
    warm.stdout.re_match_lines([r"^spec\s+version\s+backend\s+.*outcome\s+class\s+cache$",
                                r"^cnn\s+2\.5\.0\s+sim\s+.*passed\s+-\s+hit$"], consecutive=False)


SPEC = """model: cnn.onnx
inputs:
  images: {{images: {images}/*.png, limit: {limit}}}
convert:
  mean_values: [[0, 0, 0]]
  std_values: [[255, 255, 255]]
  quantize: {{dataset: {calib}/*.png}}
checks:
  cosine: {{min: {min}}}
"""


def test_a_threshold_reruns_nothing_and_a_calibration_image_reruns_its_spec_only(run_pytest, workdir, tmp_path):
    for name in ("calib_a", "calib_b"):
        shutil.copytree(IMAGES, workdir / name)

    def specs(threshold_b):
        write_spec(workdir, "a", SPEC.format(images=IMAGES, limit=4, calib="calib_a", min=0.98))
        write_spec(workdir, "b", SPEC.format(images=IMAGES, limit=3, calib="calib_b", min=threshold_b))

    def run(name):
        report = tmp_path / f"{name}.json"
        result, _ = run_pytest(str(workdir), f"--rknn-cache={tmp_path / 'cache'}", f"--rknn-json={report}")
        result.assert_outcomes(passed=2)
        return cache_states(report), json_items(report)

    specs(0.98)
    first, first_items = run("first")
    assert first == {("a", "sim"): MISS, ("b", "sim"): MISS}
    specs(0.97)  # only a threshold
    states, items = run("threshold")
    assert states == {("a", "sim"): HIT, ("b", "sim"): HIT}
    assert {item["measurement_cache"] for item in items.values()} == {HIT}  # no onnxruntime either
    shutil.copy(IMAGES / "img_09.png", workdir / "calib_a" / "img_00.png")  # same name, other content
    changed, changed_items = run("calibration")
    assert changed == {("a", "sim"): MISS, ("b", "sim"): HIT}
    b = ("b", "2.5.0", "sim")
    assert changed_items[b]["fingerprint"]["rknn_sha256"] == first_items[b]["fingerprint"]["rknn_sha256"]
    assert len(entries(tmp_path / "cache")) == 3


def test_a_corrupt_entry_is_a_miss_and_the_run_passes(run_pytest, workdir, tmp_path):
    write_spec(workdir, "cnn", "model: cnn.onnx\n")
    cache = tmp_path / "cache"

    def run(name):
        report = tmp_path / f"{name}.json"
        result, _ = run_pytest(str(workdir), f"--rknn-cache={cache}", f"--rknn-json={report}")
        result.assert_outcomes(passed=1)
        item = json_items(report)[("cnn", "2.5.0", "sim")]
        return result, (item["cache"], item["measurement_cache"]), item

    _, state, first = run("first")
    assert state == (MISS, MISS)
    [entry] = entries(cache)
    data = (entry / RKNN).read_bytes()
    (entry / RKNN).write_bytes(data[: len(data) // 3])
    result, state, again = run("truncated")
    assert state == (MISS, MISS) and again["metrics"] == first["metrics"]  # the job ran again, and was measured
    result.stdout.fnmatch_lines(["*result cache: entry * is unusable, so the job runs again*"])
    [entry] = entries(cache)  # stored again, whole
    (entry / "result.json").write_text("garbage")
    assert run("garbage")[1] == (MISS, MISS)
    [measured] = entries(cache / "measurements")
    (measured / "measurement.json").write_text('{"format": 1, "outputs": [{"name": ')
    result, state, again = run("garbage measurement")
    assert state == (HIT, MISS) and again["metrics"] == first["metrics"]
    result.stdout.fnmatch_lines(["*result cache: measurement * is unusable, so it is measured again*"])
    assert run("whole again")[1] == (HIT, HIT)


CHECKED_IMPORTS = """import sys

def pytest_terminal_summary(terminalreporter):
    terminalreporter.write_line("IMPORTED: " + ",".join(m for m in ("onnx", "onnxruntime", "pycocotools")
                                                        if m in sys.modules))
"""

YOLO_SPEC = """model: {yolo}/yolov5_heads.onnx
inputs:
  images: {{images: {yolo}/val/images/*.jpg, letterbox: 160, limit: 6}}
convert:
  mean_values: [[0, 0, 0]]
  std_values: [[255, 255, 255]]
checks:
  cosine: {{min: 0.99}}
  yolov5: {{labels: {labels}, count_tolerance: {tolerance}, map50_ratio: {ratio}}}
"""


def test_a_warm_rerun_judges_stored_measurements_without_onnxruntime_and_new_gates_judge_them_again(
        run_pytest, workdir, tmp_path):
    """A warm rerun imports neither onnx nor onnxruntime nor pycocotools; a stricter gate fails the item
    from the stored figures; new label contents measure again, from the recorded job."""
    yolo = FIXTURES / "yolo"
    labels = tmp_path / "labels.json"
    shutil.copy(yolo / "val" / "labels.json", labels)
    (workdir / "conftest.py").write_text(CHECKED_IMPORTS)
    write_spec(workdir, "cnn", "model: cnn.onnx\n")

    def run(name, tolerance=1, ratio=0.9, passed=2, failed=0):
        write_spec(workdir, "yolo", YOLO_SPEC.format(yolo=yolo, labels=labels, tolerance=tolerance, ratio=ratio))
        report = tmp_path / f"{name}.json"
        result, _ = run_pytest(str(workdir), f"--rknn-cache={tmp_path / 'cache'}", f"--rknn-json={report}")
        result.assert_outcomes(passed=passed, failed=failed)
        imported = [line for line in result.stdout.lines if line.startswith("IMPORTED:")]
        items = json_items(report)
        return imported, {spec: (items[(spec, "2.5.0", "sim")]["cache"], items[(spec, "2.5.0", "sim")]["measurement_cache"])
                          for spec in ("cnn", "yolo")}, items[("yolo", "2.5.0", "sim")]

    imported, states, cold = run("cold")
    assert states == {"cnn": (MISS, MISS), "yolo": (MISS, MISS)} and "onnxruntime" in imported[0]
    imported, states, warm = run("warm")
    assert imported == ["IMPORTED: "] and states == {"cnn": (HIT, HIT), "yolo": (HIT, HIT)}
    assert warm["metrics"] == cold["metrics"]

    imported, states, strict = run("strict gate", ratio=1.5, passed=1, failed=1)
    assert states["yolo"] == (HIT, HIT)  # judged from the stored figures, with no worker
    # Only the failed item's repro bundle asks onnxruntime again: the reference's arrays are not stored.
    assert "pycocotools" not in imported[0] and strict["repro"] is not None
    assert strict["class"] == "ACCURACY" and strict["metrics"] == cold["metrics"]
    assert strict["message"].startswith(f"yolov5: mAP@0.5 {cold['detection']['map50']:.4f} < 1.5 x onnxruntime's")

    data = json.loads(labels.read_text())
    data["annotations"] = data["annotations"][::2]  # other labels: other mAP figures
    labels.write_text(json.dumps(data))
    imported, states, relabelled = run("new labels")
    assert states == {"cnn": (HIT, HIT), "yolo": (HIT, MISS)}  # measured again, without a worker
    assert relabelled["fingerprint"]["rknn_sha256"] == cold["fingerprint"]["rknn_sha256"]
    assert relabelled["detection"]["map50"] != cold["detection"]["map50"]
    assert relabelled["outputs"] == cold["outputs"]


def test_no_cache_runs_the_worker_and_the_ini_twins_work(run_pytest, tmp_path, pytester):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    pytester.makeini("[pytest]\nrknn_cache = from-ini\n")  # relative to the ini file's folder
    report = tmp_path / "r.json"
    result, _ = run_pytest(f"--rknn-json={report}", shared_cache=False)
    result.assert_outcomes(passed=1)
    assert cache_states(report) == {("cnn", "sim"): MISS} and len(entries(pytester.path / "from-ini")) == 1
    for how in (["--rknn-no-cache"], ["-o", "rknn_no_cache=true"]):
        result, _ = run_pytest(f"--rknn-json={report}", *how, shared_cache=False)
        result.assert_outcomes(passed=1)
        [item] = json.loads(report.read_text())["items"]
        assert item["cache"] == "off" and "cache" not in item["timings"] and item["timings"]["build"] > 0, how
        result.stdout.re_match_lines([r"^spec\s+version\s+backend\s+.*outcome\s+class$"])  # no cache column when off
    assert len(entries(pytester.path / "from-ini")) == 1


def test_bad_cache_options_are_usage_errors(run_pytest, tmp_path):
    (tmp_path / "plain").write_text("a file")
    result, _ = run_pytest(f"--rknn-cache={tmp_path / 'plain'}")
    assert result.ret == 4
    result.stderr.fnmatch_lines([f"*--rknn-cache: {tmp_path / 'plain'} is a file; give a folder*"])
    result, _ = run_pytest("--rknn-cache-size=lots")
    assert result.ret == 4
    result.stderr.fnmatch_lines(["*--rknn-cache-size: 'lots' is not a size (write e.g. 2G*"])


def test_a_board_item_of_a_cache_hit_runs_the_cached_rknn(board_pytest, pytester, tmp_path):
    shutil.copy(MODELS / "cnn.onnx", pytester.path / "cnn.onnx")
    write_spec(pytester.path, "cnn", "model: cnn.onnx\n")
    cache = tmp_path / "cache"
    runs = []
    for name in ("cold", "warm"):
        report = tmp_path / f"{name}.json"
        result, _ = board_pytest(f"--rknn-cache={cache}", f"--rknn-json={report}")
        result.assert_outcomes(passed=2)
        runs.append(json_items(report))
    cold, warm = runs
    sim, board = ("cnn", "2.5.0", "sim"), ("cnn", "2.5.0", "board")
    assert (cold[sim]["cache"], warm[sim]["cache"], warm[board]["cache"]) == (MISS, HIT, HIT)
    [entry] = entries(cache)
    recorded = json.loads((entry / MANIFEST).read_text())["files"][RKNN]
    assert warm[board]["fingerprint"]["rknn_sha256"] == warm[sim]["fingerprint"]["rknn_sha256"] == recorded
    assert cold[sim]["fingerprint"]["rknn_sha256"] == recorded
    inits = [call["sha256"] for call in board_pytest.board.calls() if call["event"] == "rknn_init"]
    assert inits == [recorded, recorded]  # the board ran the recorded artifact, in both runs


def test_xdist_workers_racing_for_one_key_leave_one_whole_entry(run_pytest, workdir, tmp_path):
    """Two specs with the same content, in two xdist workers at once: both store the same key, one wins,
    no temporary folder stays, and the next run hits for both."""
    for name in ("twin_a", "twin_b"):
        write_spec(workdir, name, "model: cnn.onnx\n")
    cache = tmp_path / "cache"
    states = []
    for name in ("cold", "warm"):
        report = tmp_path / f"{name}.json"
        result, _ = run_pytest(str(workdir), "-n", "2", f"--rknn-cache={cache}", f"--rknn-json={report}")
        result.assert_outcomes(passed=2)
        states.append(cache_states(report))
    assert set(states[0].values()) <= {MISS, HIT} and states[1] == {("twin_a", "sim"): HIT, ("twin_b", "sim"): HIT}
    assert len(entries(cache)) == 1 and not list(cache.glob(".tmp-*")) and not list(cache.glob("??/.trash-*"))


def test_two_runs_that_want_the_same_job_at_once_run_it_once(workdir, tmp_path, toolkit_cache, monkeypatch):
    """Two pytest processes on one cache (as pytest-xdist workers that both need the --rknn-compare-to
    version's job): the second waits for the first's job and takes it from the cache."""
    write_spec(workdir, "cnn", "model: cnn.onnx\ninputs: {images: {random: [0, 1], seed: 77}}\n")
    cache = tmp_path / "cache"
    env = dict(os.environ, UV_CACHE_DIR=UV_CACHE)
    runs = []
    for n in range(2):
        command = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", str(workdir),
                   f"--basetemp={tmp_path / f'base{n}'}", f"--rknn-toolkit-cache={toolkit_cache}",
                   f"--rknn-cache={cache}", f"--rknn-json={tmp_path / f'r{n}.json'}"]
        runs.append(subprocess.Popen(command, cwd=workdir, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT))
    for run in runs:
        assert run.wait(timeout=600) == 0, run.stdout.read().decode()[-2000:]
    states = sorted(json_items(tmp_path / f"r{n}.json")[("cnn", "2.5.0", "sim")]["cache"] for n in range(2))
    assert states == [HIT, MISS]  # without the lock both start a worker at once: two misses
    assert len(entries(cache)) == 1


def test_the_measurement_key_moves_with_each_of_its_inputs_alone_and_not_with_a_threshold(tmp_path, monkeypatch):
    """measurement.key: what decides the judge's figures (the job, the metric settings, the sample names, the
    slices, a detector's overlays, images and labels, the host packages, this package's code); never a threshold."""
    shutil.copy(MODELS / "cnn.onnx", tmp_path / "cnn.onnx")
    for name in ("a.png", "b.png"):
        shutil.copy(IMAGES / "img_00.png", tmp_path / name)
    (tmp_path / "labels").mkdir()
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.2 0.2\n")
    base = {"model": "cnn.onnx", "checks": {"yolov5": {"labels": "labels", "overlays": 3},
                                            "cosine": {"slices": [{"name": "s", "output": "logits", "stop": 4}]}}}

    def key(job="j" * 64, changes=None, labels=("a.png", "b.png"), images=("a.png", "b.png")):
        spec = spec_from_dict(_deep_merge(base, changes or {}), base_dir=tmp_path)
        return measurement.key(job, spec, list(labels), [str(tmp_path / p) for p in images])

    def merged(changes):
        return key(changes=changes)

    same = key()
    assert key() == same
    assert merged({"checks": {"cosine": {"min": 0.5}, "yolov5": {"count_tolerance": 4, "map50_ratio": 0.5}},
                   "gate": {"cosine": 0.1}, "baseline_gate": {"map50": 0.2}, "timeout": 5}) == same  # thresholds
    moved = {
        "job": key(job="k" * 64),
        "metric settings": merged({"reference": {"apply_mean_std": False}}),
        "detector decoding": merged({"checks": {"yolov5": {"conf_threshold": 0.3}}}),
        "sample names": key(labels=("a.png", "c.png")),
        "overlays": merged({"checks": {"yolov5": {"overlays": 1}}}),
        "slices": merged({"checks": {"cosine": {"slices": [{"name": "s", "output": "logits", "stop": 5}]}}}),
    }
    shutil.copy(IMAGES / "img_01.png", tmp_path / "b.png")  # same name, other pixels
    moved["image bytes"] = key()
    shutil.copy(IMAGES / "img_00.png", tmp_path / "b.png")
    assert key() == same
    (tmp_path / "labels" / "a.txt").write_text("0 0.5 0.5 0.3 0.2\n")
    moved["label file"] = key()
    (tmp_path / "labels" / "b.txt").write_text("")
    moved["a new label file"] = key()
    monkeypatch.setattr(measurement, "host_versions", lambda: {"python": "3.11.7", "onnxruntime": "0.0.1"})
    moved["host packages"] = key()
    monkeypatch.setattr(measurement, "code_digest", lambda: "c" * 64)
    moved["code"] = key()
    assert {name: k for name, k in moved.items() if k == same} == {}
    assert len(set(moved.values())) == len(moved)
    assert measurement.key(None, spec_from_dict(base, base_dir=tmp_path), [], []) is None  # the cache is off


def test_without_a_detector_images_and_labels_are_not_in_the_measurement_key(tmp_path):
    shutil.copy(MODELS / "cnn.onnx", tmp_path / "cnn.onnx")
    shutil.copy(IMAGES / "img_00.png", tmp_path / "a.png")
    spec = spec_from_dict({"model": "cnn.onnx"}, base_dir=tmp_path)
    before = measurement.key("j" * 64, spec, ["a.png"], [str(tmp_path / "a.png")])
    shutil.copy(IMAGES / "img_01.png", tmp_path / "a.png")  # the job key holds the pixels a cosine is computed on
    assert measurement.key("j" * 64, spec, ["a.png"], [str(tmp_path / "a.png")]) == before
