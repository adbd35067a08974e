"""Baseline files, atomic writes and metric comparisons, without the toolkit."""

import json
import os
from pathlib import Path

import pytest

from pytest_rknn.atomic import write_atomic
from pytest_rknn.baseline import BaselineStore
from pytest_rknn.comparisons import Comparisons, compare_metrics, failure_class, worst_per_family
from pytest_rknn.errors import RknnError
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
    assert data["entries"]["2.5.0-sim"]["metrics"]["cosine.logits"] == 0.99987654  # eight significant digits
    assert text.endswith("}\n") and '\n  "entries": {\n' in text  # indented, one key per line: diffs stay small

    written = path.stat()
    assert store.update([record(spec_file=str(spec_file))]) == [f"{store.shown(path)}: unchanged (2.5.0-sim)"]
    assert (path.stat().st_ino, path.stat().st_mtime_ns) == (written.st_ino, written.st_mtime_ns)  # not rewritten
    assert path.read_text() == text
    store.update([record(cosine=0.99, spec_file=str(spec_file))])
    data = json.loads(path.read_text())
    assert data["entries"]["2.5.0-sim"]["metrics"]["cosine.logits"] == 0.99
    assert data["entries"]["2.3.2-sim"]["metrics"]["cosine.logits"] == 0.99987654  # not run, so kept


def test_records_without_metrics_are_not_recorded(tmp_path):
    store = BaselineStore(tmp_path, rootdir=tmp_path)
    failed = dict(record(), metrics={})
    assert store.update([failed]) == []
    assert not list(tmp_path.iterdir())


def test_lookup_finds_only_the_same_model_and_config(tmp_path):
    store = BaselineStore(tmp_path, rootdir=tmp_path)
    store.update([record()])
    entry, why = store.lookup("cnn", None, "2.5.0", "sim", MODEL_SHA, "c0ffee")
    assert entry["metrics"]["cosine.logits"] == 0.99987654 and why == ""
    assert store.lookup("cnn", None, "2.5.0", "board", MODEL_SHA, "c0ffee")[1].startswith(
        "no baseline for cnn [2.5.0-board]")
    entry, why = store.lookup("cnn", None, "2.5.0", "sim", "f" * 64, "c0ffee")
    assert entry is None and "no baseline for this model" in why and "aaaaaaaaaaaa" in why and "ffffffffffff" in why
    entry, why = store.lookup("cnn", None, "2.5.0", "sim", MODEL_SHA, "0ther")
    assert entry is None and "no baseline for this model config" in why and "--rknn-baseline-update" in why
    assert "no baseline for other" in store.lookup("other", None, "2.5.0", "sim", MODEL_SHA, "c0ffee")[1]


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
    current = {"cosine.a": 0.990, "cosine.b": 0.9995, "max_abs.a": 0.5, "map50": 0.90, "map": "nan"}
    reference = {"cosine.a": 0.999, "cosine.b": 0.999, "max_abs.a": 0.1, "map50": 0.905, "map": 0.7}
    deltas, failures = compare_metrics(current, reference, {"cosine": 0.002, "max_abs": 0.3, "map50": 0.005},
                                       "baseline x.json", "baseline_gate")
    assert [line.split(":")[1].split()[0] for line in failures] == ["cosine.a", "max_abs.a"]
    assert failures[0] == ("baseline x.json: cosine.a 0.99 vs 0.999 (worse by 0.009; "
                           "baseline_gate.cosine allows 0.002)")
    assert deltas["cosine.b"]["failed"] is False and deltas["cosine.b"]["delta"] == pytest.approx(0.0005)
    assert deltas["map50"]["failed"] is False  # worse by exactly the allowance: still allowed
    assert "map" not in deltas  # NaN has no delta


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
    from pytest_rknn.onnx_model import file_sha256

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
    from pytest_rknn.onnx_model import file_sha256

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
    deltas, failures = compare_metrics({"cycles": 5, "cpu_ops": 1}, {"cycles": 0, "cpu_ops": 0},
                                       {"cycles": 10.0, "cpu_ops": 1}, "x", "gate")
    assert failures == ["x: cycles 5 vs 0 (more, from 0; gate.cycles allows 1000% more)"]
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
