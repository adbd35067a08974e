"""Baseline files, atomic writes and metric comparisons, without the toolkit."""

import errno
import json
import locale
import os
from pathlib import Path

import pytest

from pytest_rknn.atomic import write_atomic
from pytest_rknn.baseline import BaselineStore
from pytest_rknn.comparisons import Comparisons, compare_metrics, failure_class, worst_per_family
from pytest_rknn.diagnosis.profile import CpuLayer, Profile
from pytest_rknn.errors import RknnError
from pytest_rknn.onnx_model import file_sha256
from pytest_rknn.result import OutputMetrics, RunResult
from pytest_rknn.spec import spec_from_dict

MODEL_SHA = "a" * 64


def record(version="2.5.0", backend="sim", cosine=0.999876543219, model_sha=MODEL_SHA, config="c0ffee",
           spec_file=None, spec="cnn"):
    return {"spec": spec, "spec_file": spec_file, "version": version, "backend": backend,
            "metrics": {"cosine.logits": cosine, "max_abs.logits": 0.0123456789},
            "fingerprint": {"model_sha256": model_sha, "config_hash": config, "rknn_sha256": "b" * 64,
                            "toolkit_version": version}}


def test_update_writes_one_readable_file_per_spec_and_keeps_other_entries(tmp_path):
    store = BaselineStore(tmp_path / "baseline", rootdir=tmp_path)
    spec_file = tmp_path / "models" / "cnn.rknn.yaml"
    lines = store.update([record(spec_file=str(spec_file)), record(version="2.3.2", spec_file=str(spec_file))])
    path = tmp_path / "baseline" / "models" / "cnn.json"  # mirrors the spec's folder under the rootdir
    assert lines == [f"{store.shown(path)}: created (2.3.2-sim, 2.5.0-sim)"]
    text = path.read_text()
    data = json.loads(text)
    assert list(data["entries"]) == ["2.3.2-sim", "2.5.0-sim"]
    entry = ('{\n      "config_hash": "c0ffee",\n      "metrics": {\n'
             '        "cosine.logits": 0.99987654,\n        "max_abs.logits": 0.012345679\n'  # eight significant digits
             '      },\n      "model_sha256": "' + MODEL_SHA + '",\n      "toolkit_version": "VERSION"\n    }')
    # Indented, one key per line, keys sorted: a re-record's diff shows only what changed.
    assert text == ('{\n  "entries": {\n    "2.3.2-sim": ' + entry.replace("VERSION", "2.3.2") + ',\n'
                    '    "2.5.0-sim": ' + entry.replace("VERSION", "2.5.0") + '\n  },\n  "format": 1,\n'
                    '  "spec": "cnn"\n}\n')

    written = path.stat()
    assert store.update([record(spec_file=str(spec_file))]) == [f"{store.shown(path)}: unchanged (2.5.0-sim)"]
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)  # not rewritten
    assert path.read_text() == text
    assert store.update([record(cosine=0.99, spec_file=str(spec_file))]) == [
        f"{store.shown(path)}: updated (2.5.0-sim)"]
    data = json.loads(path.read_text())
    assert data["entries"]["2.5.0-sim"]["metrics"]["cosine.logits"] == 0.99
    assert data["entries"]["2.3.2-sim"]["metrics"]["cosine.logits"] == 0.99987654  # not run, so kept


def test_records_without_metrics_or_a_model_fingerprint_are_not_recorded(tmp_path):
    store = BaselineStore(tmp_path, rootdir=tmp_path)
    failed = dict(record(), metrics={})
    unfingerprinted = {key: value for key, value in record().items() if key != "fingerprint"}
    assert store.update([failed, unfingerprinted, dict(record(), fingerprint={})]) == []
    assert not list(tmp_path.iterdir())


def test_lookup_finds_only_the_same_model_and_config(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = BaselineStore(tmp_path / "bl", rootdir=tmp_path)
    spec_file = str(tmp_path / "models" / "cnn.rknn.yaml")
    store.update([record(spec_file=spec_file)])
    entry, why = store.lookup("cnn", spec_file, "2.5.0", "sim", MODEL_SHA, "c0ffee")
    assert entry["metrics"]["cosine.logits"] == 0.99987654 and why == ""
    assert store.lookup("cnn", spec_file, "2.5.0", "board", MODEL_SHA, "c0ffee") == (
        None, "no baseline for cnn [2.5.0-board] in bl/models/cnn.json; record it with --rknn-baseline-update")
    assert store.lookup("cnn", spec_file, "2.5.0", "sim", "f" * 64, "c0ffee") == (
        None, "no baseline for this model: bl/models/cnn.json [2.5.0-sim] was recorded for model sha256 aaaaaaaaaaaa, "
              "this one is ffffffffffff; record it with --rknn-baseline-update")
    assert store.lookup("cnn", spec_file, "2.5.0", "sim", MODEL_SHA, "0ther") == (
        None, "no baseline for this model config: bl/models/cnn.json [2.5.0-sim] was recorded with config c0ffee, "
              "the spec now gives 0ther; record it with --rknn-baseline-update")
    assert store.lookup("cnn", None, "2.5.0", "sim", MODEL_SHA, "c0ffee")[1] == (  # another folder, another file
        "no baseline for cnn [2.5.0-sim] in bl/cnn.json; record it with --rknn-baseline-update")


def test_a_broken_baseline_file_is_a_spec_error_naming_it(tmp_path):
    (tmp_path / "cnn.json").write_text("{not json")
    store = BaselineStore(tmp_path, rootdir=tmp_path)
    with pytest.raises(RknnError) as excinfo:
        store.lookup("cnn", None, "2.5.0", "sim", MODEL_SHA, "c0ffee")
    assert excinfo.value.failure_class == "SPEC"
    assert "cnn.json" in excinfo.value.message and "--rknn-baseline-update" in excinfo.value.message


def test_a_corrupt_baseline_fails_its_spec_with_the_file_and_the_fix_however_it_is_broken(workdir, monkeypatch):
    tmp_path = workdir
    monkeypatch.chdir(tmp_path)
    spec = spec_from_dict({"model": "cnn.onnx"}, base_dir=tmp_path)
    store = BaselineStore(tmp_path / "bl", rootdir=tmp_path)
    (tmp_path / "bl").mkdir()
    for text, problem in (('<<<<<<< HEAD\n{"format": 1}\n', "Expecting value: line 1 column 1 (char 0)"),
                          ('{"entries": {"2.5.0-sim": 0.99}}', "entry '2.5.0-sim' is not an object with a `metrics` "
                                                               "object"),
                          (b"\xff\xfe", "cannot be read")):
        (tmp_path / "bl" / "cnn.json").write_bytes(text.encode() if isinstance(text, str) else text)
        result = _result("2.5.0", 0.9995)
        Comparisons(store, None, ["2.5.0"]).apply(spec, result, lambda version: pytest.fail("not compared"))
        assert result.failure_class == "SPEC", result.message
        assert result.message.startswith("baseline bl/cnn.json: ") and problem in result.message
        assert result.message.endswith("; fix it, or delete it and re-record with --rknn-baseline-update")


def test_an_update_leaves_a_file_it_cannot_read_as_it_is_and_writes_the_others(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = BaselineStore(tmp_path / "bl", rootdir=tmp_path)
    (tmp_path / "bl").mkdir()
    conflict = '<<<<<<< HEAD\n{"format": 1}\n=======\n{"format": 1}\n>>>>>>> theirs\n'
    (tmp_path / "bl" / "a.json").write_text(conflict)
    lines = store.update([record(spec="a"), record(spec="b")])
    assert lines == ["bl/a.json: NOT updated: not a pytest-rknn baseline (Expecting value: line 1 column 1 (char 0)); "
                     "fix it, or delete it and re-record with --rknn-baseline-update",
                     "bl/b.json: created (2.5.0-sim)"]
    assert store.not_updated == [tmp_path / "bl" / "a.json"]
    assert (tmp_path / "bl" / "a.json").read_text() == conflict  # the other side's entries are not lost
    with pytest.raises(RknnError, match=r"^\[SPEC\] baseline bl/a\.json: not a pytest-rknn baseline"):
        store.check_readable("a", None)  # what fails the spec's items while the session runs
    store.check_readable("b", None)


def test_an_update_that_cannot_write_a_file_keeps_it_as_it_was_lists_it_and_writes_the_others(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    store = BaselineStore(tmp_path / "bl", rootdir=tmp_path)
    store.update([record(spec="a")])
    before = (tmp_path / "bl" / "a.json").read_text()
    real_fsync = os.fsync

    def disk_full_for_a(fd):
        if os.path.basename(os.readlink(f"/proc/self/fd/{fd}")).startswith(".a.json."):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", disk_full_for_a)
    lines = store.update([record(spec="a", cosine=0.5), record(spec="b")])
    assert lines == ["bl/a.json: NOT updated: [Errno 28] No space left on device", "bl/b.json: created (2.5.0-sim)"]
    assert store.not_updated == [tmp_path / "bl" / "a.json"]
    assert (tmp_path / "bl" / "a.json").read_text() == before
    assert sorted(p.name for p in (tmp_path / "bl").iterdir()) == ["a.json", "b.json"]  # no temporary left


@pytest.mark.parametrize("text, problem", [
    ("[]", "expected an object with an `entries` object"),
    ('{"format": 1, "entries": ["2.5.0-sim"]}', "expected an object with an `entries` object"),
    ('{"entries": {"2.5.0-sim": {"metrics": [0.99]}}}', "entry '2.5.0-sim' is not an object with a `metrics` object"),
])
def test_each_shape_of_a_file_that_is_not_a_baseline_is_refused_naming_what_is_wrong(tmp_path, monkeypatch, text,
                                                                                      problem):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bl" / "models").mkdir(parents=True)
    (tmp_path / "bl" / "models" / "cnn.json").write_text(text)
    spec_file = str(tmp_path / "models" / "cnn.rknn.yaml")
    store = BaselineStore(tmp_path / "bl", rootdir=tmp_path)
    with pytest.raises(RknnError) as excinfo:
        store.check_readable("cnn", spec_file)
    assert excinfo.value.message == (f"baseline bl/models/cnn.json: not a pytest-rknn baseline ({problem}); "
                                     "fix it, or delete it and re-record with --rknn-baseline-update")
    assert excinfo.value.failure_class == "SPEC"
    store.check_readable("cnn", None)  # bl/cnn.json: none yet, nothing wrong


@pytest.mark.parametrize("text", ["{}", '{"format": 1, "spec": "cnn"}'])
def test_a_baseline_file_without_entries_is_an_empty_baseline(tmp_path, text):
    (tmp_path / "cnn.json").write_text(text)
    store = BaselineStore(tmp_path, rootdir=tmp_path)
    assert store.lookup("cnn", None, "2.5.0", "sim", MODEL_SHA, "c0ffee")[0] is None
    store.update([record()])
    assert list(json.loads((tmp_path / "cnn.json").read_text())["entries"]) == ["2.5.0-sim"]


def test_a_baseline_is_read_as_utf8_whatever_the_locale(tmp_path):
    """json.dumps writes ASCII, but a file edited or merged by hand may hold UTF-8 names."""
    store = BaselineStore(tmp_path, rootdir=tmp_path)
    store.update([record()])
    path = tmp_path / "cnn.json"
    path.write_text(path.read_text().replace("cosine.logits", "cosine.sortie_é"), encoding="utf-8")
    store = BaselineStore(tmp_path, rootdir=tmp_path)  # a new session: it reads the file
    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")  # an ASCII locale: the platform's default encoding is ascii
    try:
        entry, _ = store.lookup("cnn", None, "2.5.0", "sim", MODEL_SHA, "c0ffee")
    finally:
        locale.setlocale(locale.LC_CTYPE, before)
    assert entry["metrics"]["cosine.sortie_é"] == 0.99987654


def test_a_write_is_atomic_the_target_holds_the_old_bytes_until_one_rename_of_a_synced_complete_file(
        tmp_path, monkeypatch):
    path = tmp_path / "cnn.json"
    write_atomic(path, "old\n")
    new = "new\n" * 10000
    events, real_fsync, real_replace = [], os.fsync, os.replace

    def fsync(fd):
        synced = os.readlink(f"/proc/self/fd/{fd}")
        # A reader of the target sees the old file while the new one is being written and synced.
        events.append(("fsync", synced, Path(synced).read_text(), path.read_text()))
        real_fsync(fd)

    def replace(src, dst):
        events.append(("replace", str(src), str(dst), path.read_text()))
        real_replace(src, dst)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    write_atomic(path, new)
    (_, synced, content, seen), (_, src, dst, seen_at_replace) = events  # exactly one sync, then one rename
    assert synced == src != str(path) and dst == str(path)
    assert os.path.dirname(src) == str(tmp_path)  # the same folder: the rename stays on one file system
    assert content == new  # what was synced and renamed is the whole new content
    assert seen == seen_at_replace == "old\n"
    assert path.read_text() == new and [p.name for p in tmp_path.iterdir()] == ["cnn.json"]
    assert path.stat().st_mode & 0o777 == 0o644  # readable like any file, not mkstemp's 0600


def test_an_interrupted_atomic_write_leaves_the_old_file_and_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "cnn.json"
    write_atomic(path, "old\n")
    seen = []

    def power_cut(fd):  # the new bytes are written, not yet renamed: the worst moment
        seen.append(path.read_text())
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "fsync", power_cut)
    with pytest.raises(KeyboardInterrupt):
        write_atomic(path, "new\n")
    assert seen == ["old\n"]  # it was interrupted in the middle of the write...
    assert path.read_text() == "old\n"  # ...and the old file is whole
    assert [p.name for p in tmp_path.iterdir()] == ["cnn.json"]


def test_compare_metrics_knows_which_way_is_worse():
    # What cannot be compared (NaN, None, no reference) is left out, and the rest is still compared.
    current = {"map": "nan", "cosine.c": None, "cosine.new": 0.5, "cosine.a": 0.990, "cosine.b": 0.9995,
               "max_abs.a": 0.5, "map50": 0.90}
    reference = {"cosine.a": 0.999, "cosine.b": 0.999, "max_abs.a": 0.1, "map50": 0.905, "map": 0.7, "cosine.c": 0.9}
    deltas, failures = compare_metrics(current, reference, {"cosine": 0.002, "max_abs": 0.3, "map50": 0.005},
                                       "baseline x.json", "baseline_gate")
    assert [line.split(":")[1].split()[0] for line in failures] == ["cosine.a", "max_abs.a"]
    assert failures[0] == ("baseline x.json: cosine.a 0.99 vs 0.999 (worse by 0.009; "
                           "baseline_gate.cosine allows 0.002)")
    assert deltas["cosine.b"]["failed"] is False and deltas["cosine.b"]["delta"] == pytest.approx(0.0005)
    assert deltas["map50"]["failed"] is False  # worse by exactly the allowance: still allowed
    assert list(deltas) == ["cosine.a", "cosine.b", "max_abs.a", "map50"]  # NaN, None, no reference: no delta


def test_costs_are_gated_as_relative_growth_and_fail_in_their_own_class():
    current = {"cosine.a": 0.999, "cpu_ops": 1, "cycles": 1100, "memory.weight": 1050, "latency.median_ms": 0.0}
    reference = {"cosine.a": 0.999, "cpu_ops": 0, "cycles": 1000, "memory.weight": 1000, "latency.median_ms": 0.0}
    allowed = {"cosine": 0.002, "cpu_ops": 0, "cycles": 0.05, "memory": 0.10, "latency": 0.25}
    deltas, failures = compare_metrics(current, reference, allowed, "upgrade gate vs 2.3.2 (this run)", "gate")
    assert failures == ["upgrade gate vs 2.3.2 (this run): cpu_ops 1 vs 0 (worse by 1; gate.cpu_ops allows 0)",
                        "upgrade gate vs 2.3.2 (this run): cycles 1100 vs 1000 (10.0% more; gate.cycles allows 5% more)"]
    assert deltas["memory.weight"]["failed"] is False  # 5% more, 10% allowed
    assert deltas["latency.median_ms"]["failed"] is False  # from 0 to 0 is no growth
    assert failure_class(deltas) == "PLACEMENT"
    del deltas["cpu_ops"]
    assert failure_class(deltas) == "PERFORMANCE"
    fewer, none = compare_metrics({"cycles": 900, "cpu_ops": 0}, {"cycles": 1000, "cpu_ops": 2}, allowed, "x", "gate")
    assert none == [] and fewer["cycles"]["delta"] == -100  # cheaper is never a failure


def _result(version, cosine, spec_path=None):
    result = RunResult(spec="cnn", version=version, backend="sim", spec_path=spec_path)
    metrics = OutputMetrics(name="logits", ref_shape=[1, 10], samples=1, worst_cosine=cosine, max_abs=0.01)
    result.outputs = [metrics]
    result.fingerprint = {"model_sha256": MODEL_SHA, "config_hash": "c0ffee"}
    return result


def test_the_upgrade_gate_fails_a_passing_version_that_got_worse(workdir):
    spec = spec_from_dict({"model": "cnn.onnx", "gate": {"cosine": 0.001}}, base_dir=workdir)
    measured = []

    def measure(version):
        measured.append(version)
        return _result(version, 0.9995)

    comparisons = Comparisons(None, "2.3.2", ["2.3.2", "2.5.0"])
    result = _result("2.5.0", 0.9980)
    comparisons.apply(spec, result, measure)
    assert measured == ["2.3.2"]
    assert result.failure_class == "ACCURACY"
    assert result.message.startswith("upgrade gate vs 2.3.2 (this run): cosine.logits 0.998 vs 0.9995 "
                                     "(worse by 0.0015; gate.cosine allows 0.001)")
    better = _result("2.5.0", 0.9999)
    comparisons.apply(spec, better, measure)
    assert better.passed and better.comparisons[0]["deltas"]["cosine.logits"]["delta"] == pytest.approx(0.0004)


def test_a_missing_baseline_warns_and_the_gate_reads_an_older_version_from_the_baseline(workdir, tmp_path):
    spec = spec_from_dict({"model": "cnn.onnx"}, base_dir=workdir)
    store = BaselineStore(tmp_path / "baseline", rootdir=tmp_path)
    old = record(version="2.3.2", cosine=0.9999, model_sha=file_sha256(workdir / "cnn.onnx"),
                 config=spec.for_version("2.3.2").metrics_config_hash())
    store.update([old])
    result = _result("2.5.0", 0.9990)
    comparisons = Comparisons(store, "2.3.2", ["2.5.0"])
    comparisons.apply(spec, result, lambda version: pytest.fail("2.3.2 is in the baseline; it must not run"))
    baseline, gate = result.comparisons
    assert baseline["against"] == "baseline" and "no baseline for cnn [2.5.0-sim]" in baseline["missing"]
    assert result.warnings == [baseline["missing"]]
    assert gate["against"] == "2.3.2" and gate["source"] == "baseline"
    assert gate["deltas"]["cosine.logits"]["reference"] == 0.9999 and result.passed


def test_an_old_version_that_failed_to_build_is_a_warning_not_a_gate(workdir):
    spec = spec_from_dict({"model": "cnn.onnx"}, base_dir=workdir)
    broken = RunResult(spec="cnn", version="2.3.2", backend="sim", failure_class="BUILD",
                       message="build() raised ValueError: NonZero")
    result = _result("2.5.0", 0.9990)
    Comparisons(None, "2.3.2", ["2.3.2", "2.5.0"]).apply(spec, result, lambda version: broken)
    assert result.passed and result.comparisons[0]["against"] == "2.3.2"
    assert result.warnings == ["cannot compare with 2.3.2: its result has no metrics "
                               "([BUILD] build() raised ValueError: NonZero)"]


def test_the_gate_reads_the_old_versions_own_config_from_the_baseline_when_versions_override_it(workdir, tmp_path):
    """The runner hands the comparison the new version's spec; the old version's baseline entry was
    recorded under the old version's config (here fp16 on 2.3.2, int8 on 2.5.0), and must be found."""
    (workdir / "calib").mkdir()
    spec = spec_from_dict({"model": "cnn.onnx", "gate": {"cosine": 0.001},
                           "versions": {"2.5.0": {"convert": {"quantize": {"dataset": "calib/*.png"}}}}},
                          base_dir=workdir)
    assert spec.for_version("2.5.0").for_version("2.3.2").metrics_config_hash() == \
        spec.for_version("2.3.2").metrics_config_hash() != spec.for_version("2.5.0").metrics_config_hash()
    store = BaselineStore(tmp_path / "baseline", rootdir=tmp_path)
    store.update([record(version="2.3.2", cosine=0.9999, model_sha=file_sha256(workdir / "cnn.onnx"),
                         config=spec.for_version("2.3.2").metrics_config_hash())])
    result = _result("2.5.0", 0.9980)
    Comparisons(store, "2.3.2", ["2.5.0"], updating_baseline=True).apply(
        spec.for_version("2.5.0"), result, lambda version: pytest.fail("2.3.2 is in the baseline; it must not run"))
    gate, = result.comparisons
    assert (gate["against"], gate["source"]) == ("2.3.2", "baseline")
    assert result.failures == ["upgrade gate vs 2.3.2 (baseline): cosine.logits 0.998 vs 0.9999 "
                               "(worse by 0.0019; gate.cosine allows 0.001)"]


def test_a_strict_baseline_fails_an_item_without_an_entry_and_a_lenient_one_warns(workdir, tmp_path):
    spec = spec_from_dict({"model": "cnn.onnx"}, base_dir=workdir)
    store = BaselineStore(tmp_path / "baseline", rootdir=tmp_path)
    store.update([record(version="2.3.2", cosine=0.9999)])  # another version's entry only
    lenient, strict = _result("2.5.0", 0.9990), _result("2.5.0", 0.9990)
    Comparisons(store, None, ["2.5.0"]).apply(spec, lenient, lambda version: None)
    Comparisons(store, None, ["2.5.0"], strict_baseline=True).apply(spec, strict, lambda version: None)
    assert lenient.passed and lenient.warnings and lenient.warnings[0].startswith("no baseline for cnn [2.5.0-sim]")
    assert strict.failure_class == "SPEC" and strict.message == (
        f"{lenient.warnings[0]} (--rknn-baseline-strict: every item needs its baseline)")
    assert "record it with --rknn-baseline-update" in strict.message


@pytest.mark.parametrize("metric, reference, at_the_line, beyond, allowed", [
    ("cosine.a", 0.999, 0.997, 0.99699, 0.002),  # a drop
    ("vs_sim_cosine.a", 0.99995, 0.99985, 0.99984, 0.0001),
    ("map50", 0.75, 0.5, 0.4999, 0.25),
    ("agreement_map50", 1.0, 0.98, 0.9799, 0.02),
    ("max_abs.a", 0.1, 0.35, 0.35001, 0.25),  # a growth
    ("cpu_ops", 1, 2, 3, 1),
    ("cycles", 1000, 1050, 1051, 0.05),  # a relative growth
    ("memory.weight", 2000, 2200, 2201, 0.10),
    ("latency.median_ms", 8.0, 10.0, 10.01, 0.25),
    ("latency.median_ms", 0.8, 1.0, 1.001, 0.25),  # a reference under 1 is a fraction like any other
])
def test_each_gate_allows_exactly_its_worsening_and_fails_just_beyond(metric, reference, at_the_line, beyond, allowed):
    family = metric.split(".")[0]
    deltas, failures = compare_metrics({metric: at_the_line}, {metric: reference}, {family: allowed}, "x", "gate")
    assert failures == [] and deltas[metric]["failed"] is False and deltas[metric]["allowed"] == allowed
    deltas, failures = compare_metrics({metric: beyond}, {metric: reference}, {family: allowed}, "x", "gate")
    assert deltas[metric]["failed"] is True and len(failures) == 1
    assert failures[0].startswith(f"x: {metric} {beyond:.6g} vs {reference:.6g} (")
    assert f"gate.{family} allows" in failures[0]
    assert compare_metrics({metric: beyond}, {metric: reference}, {}, "x", "gate")[1] == []  # no gate, no failure


def test_growth_from_zero_is_infinite_for_relative_costs_and_counted_for_absolute_ones():
    deltas, failures = compare_metrics({"cycles": 5, "cpu_ops": 1, "latency.median_ms": 0.5},
                                       {"cycles": 0, "cpu_ops": 0, "latency.median_ms": 0.0},
                                       {"cycles": 10.0, "cpu_ops": 1, "latency": 0.25}, "x", "gate")
    assert failures == ["x: cycles 5 vs 0 (more, from 0; gate.cycles allows 1000% more)",
                        "x: latency.median_ms 0.5 vs 0 (more, from 0; gate.latency allows 25% more)"]
    assert deltas["cpu_ops"]["failed"] is False and deltas["cycles"]["delta"] == 5


def test_the_summary_shows_the_worst_change_of_each_family_and_others_only_when_they_failed():
    deltas = {"cosine.a": {"delta": -0.001, "failed": False}, "cosine.b": {"delta": -0.002, "failed": False},
              "max_abs.a": {"delta": 0.5, "failed": False}, "cycles": {"delta": 10, "failed": True},
              "map50": {"delta": -0.01, "failed": False}, "agreement_map50": {"delta": -0.2, "failed": False}}
    worst = worst_per_family(deltas)
    assert worst == {"cosine": deltas["cosine.b"], "cycles": deltas["cycles"], "map50": deltas["map50"]}
    failed_first = worst_per_family({"cosine.a": {"delta": -0.1, "failed": False},
                                     "cosine.b": {"delta": -0.001, "failed": True}})
    assert failed_first == {"cosine": {"delta": -0.001, "failed": True}}  # a failed one before a larger change
    assert worst_per_family({"max_abs.a": {"delta": 0.1, "failed": False},
                             "max_abs.b": {"delta": 0.3, "failed": True}, "cpu_ops": {"delta": 2, "failed": True},
                             "agreement_map50": {"delta": -0.3, "failed": False}}) == {
        "max_abs": {"delta": 0.3, "failed": True}, "cpu_ops": {"delta": 2, "failed": True},
        "agreement_map50": {"delta": -0.3, "failed": False}}


def test_a_zero_allowance_tolerates_float_noise_and_nothing_more():
    for grown, failed in ((0.0, False), (1e-12, False), (2e-12, True)):
        deltas, _ = compare_metrics({"max_abs.a": grown}, {"max_abs.a": 0.0}, {"max_abs": 0.0}, "x", "gate")
        assert deltas["max_abs.a"]["failed"] is failed, grown


def test_an_output_name_with_dots_is_gated_by_its_family():
    deltas, failures = compare_metrics({"cosine.head.1": 0.99}, {"cosine.head.1": 0.999}, {"cosine": 0.002},
                                       "x", "gate")
    assert failures == ["x: cosine.head.1 0.99 vs 0.999 (worse by 0.009; gate.cosine allows 0.002)"]


def test_the_summary_keeps_the_largest_growth_of_a_cost_and_the_first_of_equal_changes():
    grown = {"max_abs.a": {"delta": 0.3, "failed": True, "value": 0.4}, "max_abs.b": {"delta": 0.5, "failed": True},
             "max_abs.c": {"delta": 0.5, "failed": True, "value": "c"}}
    assert worst_per_family(grown) == {"max_abs": {"delta": 0.5, "failed": True}}
    dropped = {"cosine.a": {"delta": -0.002, "failed": False}, "cosine.b": {"delta": -0.002, "failed": False,
                                                                            "value": "b"}}
    assert worst_per_family(dropped) == {"cosine": {"delta": -0.002, "failed": False}}
    assert worst_per_family({"map50": {"delta": -0.01, "failed": False}}) == {
        "map50": {"delta": -0.01, "failed": False}}  # mAP without an agreement mAP


SPEC_FILE = "models/cnn.rknn.yaml"  # the baseline of a spec in models/ is bl/models/cnn.json
ENTRY_PATH = "bl/models/cnn.json"
BASELINE_METRICS = {"cosine.logits": 0.9995, "max_abs.logits": 0.01, "cpu_ops": 1, "cycles": 1000,
                    "memory.weight": 1000}


def _profiled(version, cosine, cpu_ops=1, cycles=1000, layers=(), spec_path=None):
    """A simulator result with a build profile: cpu_ops, cycles and memory.weight (1000)."""
    result = _result(version, cosine, spec_path=spec_path)
    result.profile = Profile(npu_ops=20, cpu_ops=cpu_ops, cycles=cycles, internal_memory=None, weight_memory=1000,
                             rknn_bytes=None, build_seconds=1.0, cpu_layers=list(layers))
    return result


@pytest.fixture
def recorded(workdir, monkeypatch):
    """A baseline folder bl/ under the rootdir (also the cwd) with BASELINE_METRICS for cnn [2.5.0-sim] of
    models/cnn.rknn.yaml; returns (store, the spec file's path)."""
    monkeypatch.chdir(workdir)
    store = BaselineStore(workdir / "bl", rootdir=workdir)
    spec_file = workdir / SPEC_FILE
    store.update([dict(record(spec_file=str(spec_file)), metrics=BASELINE_METRICS)])
    return BaselineStore(workdir / "bl", rootdir=workdir), spec_file  # a new session reads the file


def test_a_result_worse_than_its_baseline_fails_per_metric_with_the_cpu_layers_and_one_re_record_hint(
        workdir, recorded):
    store, spec_file = recorded
    spec = spec_from_dict({"model": "cnn.onnx"}, base_dir=workdir)  # the default baseline_gate
    layers = [CpuLayer("Softmax", "prob", "Softmax", "prob_out", "Softmax: axis=0 is not supported on the NPU"),
              CpuLayer("Reshape", "flat", "Reshape", "flat_out", None)]
    result = _profiled("2.5.0", 0.9985, cpu_ops=3, cycles=1100, layers=layers, spec_path=spec_file)
    Comparisons(store, None, ["2.5.0"]).apply(spec, result, lambda version: pytest.fail("no compare-to"))
    assert result.failures == [
        f"baseline {ENTRY_PATH}: cosine.logits 0.9985 vs 0.9995 (worse by 0.001; baseline_gate.cosine allows 0.0005)",
        f"baseline {ENTRY_PATH}: cpu_ops 3 vs 1 (worse by 2; baseline_gate.cpu_ops allows 0); on the CPU now: "
        "Softmax 'prob' (Softmax: axis=0 is not supported on the NPU); Reshape 'flat'",
        f"baseline {ENTRY_PATH}: cycles 1100 vs 1000 (10.0% more; baseline_gate.cycles allows 5% more); "
        "if this is expected, re-record with --rknn-baseline-update"]
    assert (result.failure_class, result.message) == ("ACCURACY", result.failures[0])  # the first that failed
    comparison, = result.comparisons
    deltas = comparison.pop("deltas")
    assert comparison == {"against": "baseline", "source": ENTRY_PATH}
    assert list(deltas) == ["cosine.logits", "max_abs.logits", "cpu_ops", "cycles", "memory.weight"]
    assert deltas["cpu_ops"] == {"value": 3, "reference": 1, "delta": 2, "allowed": 0, "failed": True}
    assert deltas["max_abs.logits"] == {"value": 0.01, "reference": 0.01, "delta": 0, "allowed": None,
                                        "failed": False}  # no max_abs in the default gate: shown, not gated
    assert deltas["memory.weight"] == {"value": 1000, "reference": 1000, "delta": 0, "allowed": 0.10,
                                       "failed": False}


def test_a_baseline_failure_takes_the_class_of_the_first_failed_family_and_an_unchanged_result_passes(
        workdir, recorded):
    store, spec_file = recorded
    spec = spec_from_dict({"model": "cnn.onnx"}, base_dir=workdir)
    comparisons = Comparisons(store, None, ["2.5.0"])

    def compared(**profile):
        result = _profiled("2.5.0", 0.9995, spec_path=spec_file, **profile)
        comparisons.apply(spec, result, lambda version: pytest.fail("no compare-to"))
        return result

    placement = compared(cpu_ops=2, cycles=1100)
    assert placement.failure_class == "PLACEMENT"
    assert placement.message == f"baseline {ENTRY_PATH}: cpu_ops 2 vs 1 (worse by 1; baseline_gate.cpu_ops allows 0)"
    assert placement.failures[1].endswith("allows 5% more); if this is expected, re-record with --rknn-baseline-update")
    performance = compared(cycles=1051)
    assert performance.failure_class == "PERFORMANCE" and performance.failures == [
        f"baseline {ENTRY_PATH}: cycles 1051 vs 1000 (5.1% more; baseline_gate.cycles allows 5% more); "
        "if this is expected, re-record with --rknn-baseline-update"]
    unchanged = compared(cycles=1050)
    assert unchanged.passed and unchanged.warnings == [] and len(unchanged.comparisons[0]["deltas"]) == 5


def test_a_result_equal_to_its_baseline_at_the_files_precision_is_not_worse(workdir, recorded):
    store, spec_file = recorded
    spec = spec_from_dict({"model": "cnn.onnx", "baseline_gate": {"cosine": 0}}, base_dir=workdir)
    store.update([dict(record(spec_file=str(spec_file)), metrics={"cosine.logits": 0.999876543219})])
    same, worse = _result("2.5.0", 0.999876543219, spec_file), _result("2.5.0", 0.9998765, spec_file)
    for result in (same, worse):
        Comparisons(BaselineStore(workdir / "bl", rootdir=workdir), None, ["2.5.0"]).apply(
            spec, result, lambda version: pytest.fail("no compare-to"))
    assert same.passed and same.comparisons[0]["deltas"]["cosine.logits"]["reference"] == 0.99987654
    assert worse.failures == [f"baseline {ENTRY_PATH}: cosine.logits 0.999876 vs 0.999877 (worse by 4e-08; "
                              "baseline_gate.cosine allows 0); if this is expected, re-record with "
                              "--rknn-baseline-update"]


def test_a_baseline_of_another_model_config_or_version_is_missing_and_says_where_it_was_looked_for(
        workdir, recorded):
    store, spec_file = recorded
    spec = spec_from_dict({"model": "cnn.onnx"}, base_dir=workdir)
    other_version = _profiled("2.4.0", 0.9995, spec_path=spec_file)
    Comparisons(store, None, ["2.4.0"]).apply(spec, other_version, lambda version: pytest.fail("no compare-to"))
    why = f"no baseline for cnn [2.4.0-sim] in {ENTRY_PATH}; record it with --rknn-baseline-update"
    assert other_version.comparisons == [{"against": "baseline", "source": ENTRY_PATH, "missing": why}]
    assert other_version.passed and other_version.warnings == [why]
    for key, starts in (("model_sha256", "no baseline for this model: "),
                        ("config_hash", "no baseline for this model config: ")):
        result = _profiled("2.5.0", 0.9995, spec_path=spec_file)
        result.fingerprint[key] = "f" * 64
        Comparisons(store, None, ["2.5.0"]).apply(spec, result, lambda version: pytest.fail("no compare-to"))
        assert result.passed and result.warnings[0].startswith(starts + ENTRY_PATH), result.warnings


def test_a_spec_given_as_a_dict_has_its_baseline_at_the_top_wherever_pytest_runs_from(workdir, monkeypatch):
    store = BaselineStore(workdir / "bl", rootdir=workdir)
    store.update([record(cosine=0.9995)])  # no spec file: bl/cnn.json
    (workdir / "sub").mkdir()
    monkeypatch.chdir(workdir / "sub")
    spec = spec_from_dict({"model": str(workdir / "cnn.onnx")}, base_dir=workdir)
    result = _result("2.5.0", 0.9995)
    Comparisons(store, None, ["2.5.0"]).apply(spec, result, lambda version: pytest.fail("no compare-to"))
    assert result.warnings == [] and result.comparisons[0]["source"] == str(workdir / "bl" / "cnn.json")
    assert result.comparisons[0]["deltas"]["cosine.logits"]["reference"] == 0.9995


def test_a_baseline_entry_without_metrics_compares_nothing_and_the_gate_measures_the_old_version_instead(
        workdir, monkeypatch):
    """A hand-written entry may leave out `metrics`: it is no baseline (a comparison with it would compare
    nothing, and pass), and the upgrade gate measures the old version as when there is no entry."""
    monkeypatch.chdir(workdir)
    spec = spec_from_dict({"model": "cnn.onnx"}, base_dir=workdir)
    entry = {"model_sha256": file_sha256(workdir / "cnn.onnx"), "config_hash": spec.metrics_config_hash()}
    (workdir / "bl").mkdir()
    (workdir / "bl" / "cnn.json").write_text(json.dumps({"entries": {"2.3.2-sim": entry, "2.5.0-sim": dict(
        entry, model_sha256=MODEL_SHA, config_hash="c0ffee")}}))
    measured = []
    result = _result("2.5.0", 0.9990)
    Comparisons(BaselineStore(workdir / "bl", rootdir=workdir), "2.3.2", ["2.5.0"]).apply(
        spec, result, lambda version: measured.append(version) or _result(version, 0.9995))
    baseline, gate = result.comparisons
    why = "no metrics in the baseline bl/cnn.json [2.5.0-sim]; record it with --rknn-baseline-update"
    assert baseline == {"against": "baseline", "source": "bl/cnn.json", "missing": why}
    assert result.passed and result.warnings == [why]
    assert measured == ["2.3.2"] and (gate["source"], gate["deltas"]["cosine.logits"]["reference"]) == (
        "this run", 0.9995)


def test_the_gate_reads_the_old_version_of_a_spec_in_a_folder_with_that_versions_own_overrides(workdir, recorded):
    store, spec_file = recorded
    spec = spec_from_dict({"model": "cnn.onnx", "versions": {"2.3.2": {"convert": {"optimization_level": 2}}}},
                          base_dir=workdir)
    old = spec.for_version("2.3.2")
    assert old.metrics_config_hash() != spec.metrics_config_hash()
    store.update([dict(record(version="2.3.2", spec_file=str(spec_file), model_sha=file_sha256(old.model_path),
                              config=old.metrics_config_hash()), metrics={"cpu_ops": 0})])
    layers = [CpuLayer("Softmax", "prob", "Softmax", "prob_out", None)]
    result = _profiled("2.5.0", 0.9995, cpu_ops=1, layers=layers, spec_path=spec_file)
    Comparisons(store, "2.3.2", ["2.5.0"], updating_baseline=True).apply(
        spec.for_version("2.5.0"), result, lambda version: pytest.fail("2.3.2 is in the baseline; it must not run"))
    gate, = result.comparisons
    assert (gate["against"], gate["source"], list(gate["deltas"])) == ("2.3.2", "baseline", ["cpu_ops"])
    assert result.failure_class == "PLACEMENT" and result.failures == [
        "upgrade gate vs 2.3.2 (baseline): cpu_ops 1 vs 0 (worse by 1; gate.cpu_ops allows 0); "
        "on the CPU now: Softmax 'prob'"]  # no re-record hint: the upgrade gate is not a baseline


def test_an_old_version_that_failed_and_is_not_in_the_run_fails_the_gate_in_its_class(workdir):
    spec = spec_from_dict({"model": "cnn.onnx"}, base_dir=workdir)
    broken = RunResult(spec="cnn", version="2.3.2", backend="sim", failure_class="BUILD",
                       message="build() raised ValueError: NonZero")
    why = "its result has no metrics ([BUILD] build() raised ValueError: NonZero)"
    line = (f"upgrade gate vs 2.3.2: cannot compare, {why}, so the gate compared nothing "
            "(make 2.3.2 run this spec, or leave out --rknn-compare-to)")
    result = _result("2.5.0", 0.9990)
    Comparisons(None, "2.3.2", ["2.5.0"]).apply(spec, result, lambda version: broken)
    assert result.comparisons == [{"against": "2.3.2", "source": "this run", "missing": why}]
    assert (result.failure_class, result.message, result.failures) == ("BUILD", line, [line])
    already = _result("2.5.0", 0.9990)
    already.add_failures(["cosine.logits 0.999 < 0.9995"])
    Comparisons(None, "2.3.2", ["2.5.0"]).apply(spec, already, lambda version: broken)
    assert (already.failure_class, already.message) == ("ACCURACY", "cosine.logits 0.999 < 0.9995")
    assert already.failures == ["cosine.logits 0.999 < 0.9995", line]
