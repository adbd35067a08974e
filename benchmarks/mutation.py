"""Mutation testing of the judging modules with mutmut, against the fast unit tests only.

    .venv/bin/python benchmarks/mutation.py [--tree DIR] [--module NAME ...] [--show-survivors]
                                            [--work DIR] [--max-children N]

Run by hand, not in CI. It works in a scratch copy of the tree (mutmut writes mutants/ and its
config next to the code), prints a table per module and, with --show-survivors, the diff of every
mutant no test caught. `--work DIR` keeps the copy there, e.g. for `mutmut show NAME` or `mutmut browse`
run in it; each run makes its mutants anew.

The tests are those that benchmarks/mutation_unit_tests.py keeps (a pytest plugin enabled with -p).
Mutants known to behave exactly like the code are listed in benchmarks/mutation_equivalent.txt, one
mutant name a line and the reason after a `#`; kill rate = killed / (mutants - equivalent).
"""

from __future__ import annotations

import argparse
import fnmatch
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

MUTMUT = "3.8.1"
HERE = Path(__file__).resolve().parent
PLUGIN = HERE / "mutation_unit_tests.py"
EQUIVALENT = HERE / "mutation_equivalent.txt"

# NAME -> the functions to mutate (mutmut's mangled names, fnmatch patterns) in pytest_rknn/NAME.py; a name
# with a `:` is a part of its module (result_cache:keys is result_cache.py's key digests).
MODULES = {name: ["*"] for name in (
    "checks", "metrics", "judge", "comparisons", "baseline", "measurement", "detection/check",
    "detection/metrics", "detection/nms", "detection/geometry", "diagnosis/profile")}
MODULES["result_cache:keys"] = [
    "x_model_digest", "x_inputs_digest", "x_arrays_digest", "x_dataset_digest", "x_key_material", "x_key_of",
    "x_environment_signature", "x_environment_of", "xǁResultCacheǁkey_for", "xǁResultCacheǁ_environment",
    "xǁResultCacheǁ_recorded_environment"]
# Rows of their own after the total, not in it: of spec.py the per-version merge and the hashes; the result
# cache's storage (entries, manifests, eviction: files, not judging).
EXTRA = {
    "spec": ["xǁSpecǁfor_version", "x__deep_merge", "xǁSpecǁconfig_hash", "xǁSpecǁmetrics_config_hash"],
    "result_cache:storage": [
        "x_parse_size", "x__link", "x__remove", "x__warn", "xǁResultCacheǁ__init__", "xǁResultCacheǁentry",
        "xǁResultCacheǁmeasurement_entry", "xǁResultCacheǁload", "xǁResultCacheǁload_outputs",
        "xǁResultCacheǁ_place_all", "xǁResultCacheǁ_verify", "xǁResultCacheǁload_measurement",
        "xǁResultCacheǁstore_measurement", "xǁResultCacheǁstore", "xǁResultCacheǁ_store",
        "xǁResultCacheǁ_ensure_root", "xǁResultCacheǁ_write_entry", "xǁResultCacheǁdiscard",
        "xǁResultCacheǁentries", "xǁResultCacheǁevict"],
}
EXTRA_LABEL = {"spec": ["Spec.for_version", "_deep_merge", "Spec.config_hash", "Spec.metrics_config_hash"]}

# What the tests read besides pytest_rknn/ and tests/ (which mutmut copies by itself).
ALSO_COPY = ["fixtures", "conftest.py", "README.md", PLUGIN.name]

SPINNER = "⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏"
STATUS = {1: "killed", 3: "killed", 0: "survived", 5: "no tests", 33: "no tests", 34: "skipped",
          36: "timeout", 24: "timeout", -24: "timeout", 152: "timeout", 255: "timeout", None: "not run"}


def ensure_mutmut() -> None:
    try:
        if importlib.metadata.version("mutmut") == MUTMUT:
            return
    except importlib.metadata.PackageNotFoundError:
        pass
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", f"mutmut=={MUTMUT}"], check=True)


def module_path(name: str) -> str:
    return f"pytest_rknn/{name.partition(':')[0]}.py"


def mutant_prefix(name: str) -> str:
    return f"pytest_rknn.{name.partition(':')[0].replace('/', '.')}."


def setup_cfg(names: list[str]) -> str:
    def lines(values):
        return "".join(f"\n    {v}" for v in values)

    # pytest_add_cli_args go on every pytest run mutmut makes in-process; `tests` is what its stats
    # and clean runs collect (the plugin then drops the slow ones), and a mutant runs only the tests
    # that the stats run saw reach its function.
    return f"""[mutmut]
source_paths = pytest_rknn
only_mutate ={lines(sorted({module_path(n) for n in names}))}
also_copy ={lines(ALSO_COPY)}
pytest_add_cli_args_test_selection = tests
pytest_add_cli_args ={lines(["-p", "mutation_unit_tests", "-p", "no:cacheprovider"])}
use_git_change_detection = false
"""


def make_work_copy(tree: Path, work: Path, names: list[str]) -> None:
    skip = shutil.ignore_patterns("__pycache__", ".pytest_cache")
    for part in ("mutants", "pytest_rknn", "tests", "fixtures"):  # a reused folder: nothing of the last run
        shutil.rmtree(work / part, ignore_errors=True)
    for part in ("pytest_rknn", "tests", "fixtures"):
        shutil.copytree(tree / part, work / part, ignore=skip)
    for part in ("conftest.py", "README.md", "pyproject.toml"):
        shutil.copy2(tree / part, work / part)
    shutil.copy2(PLUGIN, work / PLUGIN.name)
    (work / "setup.cfg").write_text(setup_cfg(names))


def run_mutmut(work: Path, patterns: list[str], max_children: int) -> int:
    mutmut = Path(sys.executable).parent / "mutmut"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the mutants, nothing else, are pytest_rknn
    command = [str(mutmut), "run", "--max-children", str(max_children), *patterns]
    process = subprocess.Popen(command, cwd=work, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                               text=True, bufsize=1)
    # Text mode splits mutmut's spinner (a line redrawn after a carriage return) into lines: show each
    # phase's title once and the progress every 30 s. The list of every mutant's result that ends its
    # output is left to the table.
    shown, title = 0.0, ""
    for line in process.stdout or ():
        line = line.rstrip()
        if line.startswith("Mutant results"):
            break
        if line[:1] in SPINNER:
            text = line[1:].strip()
            progress = text[:1].isdigit()
            if text and (time.monotonic() - shown > 30 if progress else text != title):
                print("   ", text, flush=True)
                shown, title = time.monotonic(), text
        elif line:
            print(line, flush=True)
    for _ in process.stdout or ():
        pass
    return process.wait()


def load_equivalent() -> dict[str, str]:
    found = {}
    if EQUIVALENT.exists():
        for line in EQUIVALENT.read_text().splitlines():
            mutant, _, reason = line.partition("#")
            if mutant.strip():
                found[mutant.strip()] = reason.strip()
    return found


def results(work: Path, name: str, patterns: list[str]) -> dict[str, str]:
    """Mutant name -> status, of the functions of `patterns` only, by function and number."""
    meta = json.loads((work / "mutants" / (module_path(name) + ".meta")).read_text())
    prefix = mutant_prefix(name)
    found = {key: STATUS.get(code, "suspicious") for key, code in meta["exit_code_by_key"].items()
             if any(fnmatch.fnmatch(key, f"{prefix}{p}__mutmut_*") for p in patterns)}
    number = lambda key: (key.rpartition("__mutmut_")[0], int(key.rpartition("__mutmut_")[2]))
    return dict(sorted(found.items(), key=lambda item: number(item[0])))


def table(rows: list[tuple[str, dict[str, str]]], equivalent: dict[str, str]) -> list[str]:
    """A markdown table. The counts but `mutants` leave out the equivalent mutants; `no tests`: no
    selected test reaches the function; `suspicious` also counts mutants mutmut did not run."""
    head = ("module", "mutants", "killed", "survived", "timeout", "suspicious", "no tests", "equivalent", "kill rate")
    out = [" | ".join(head), " | ".join("---" for _ in head)]
    for name, statuses in rows:
        count = lambda *wanted: sum(status in wanted for k, status in statuses.items() if k not in equivalent)
        equal = sum(k in equivalent for k in statuses)
        denominator = len(statuses) - equal
        rate = f"{100 * count('killed') / denominator:.1f}%" if denominator else "-"
        out.append(" | ".join(str(v) for v in (
            name, len(statuses), count("killed"), count("survived"), count("timeout"),
            count("suspicious", "not run", "skipped"), count("no tests"), equal, rate)))
    return out


def located_diff(key: str, path: str) -> str:
    """mutmut's diff of one mutant, headed by the line it changes: the diff counts lines from the
    function's first one, so its hunk (the changed line and some context) is looked up in the file."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    lines = get_diff_for_mutant(key, path=path).splitlines()[2:]  # without the ---/+++ header
    body = lines[1:]  # after the hunk's @@ line (one hunk: a mutant changes one place)
    original = [line[1:].strip() for line in body if not line.startswith("+")]
    changed = sum(1 for line in body[:next(i for i, line in enumerate(body) if line[:1] in "-+")]
                  if not line.startswith("+"))
    source = [line.strip() for line in Path(path).read_text().splitlines()]
    start = next((i for i in range(len(source)) if source[i:i + len(original)] == original), None)
    where = path if start is None else f"{path}:{start + changed + 1}"
    return f"# {key} ({where})\n" + "\n".join(lines)


def run(args: argparse.Namespace, names: list[str], work: Path) -> int:
    patterns_of = {n: {**MODULES, **EXTRA}[n] for n in names}
    work.mkdir(parents=True, exist_ok=True)
    make_work_copy(args.tree.resolve(), work, names)
    print(f"mutmut {MUTMUT} on {args.tree.resolve()} in {work}", flush=True)

    started = time.monotonic()
    # mutmut runs the mutants these patterns name: only the chosen modules, and of spec.py only EXTRA's functions.
    selected = [f"{mutant_prefix(n)}{p}__mutmut_*" for n in names for p in patterns_of[n]]
    code = run_mutmut(work, selected, args.max_children)
    wall = time.monotonic() - started
    if code != 0:
        print(f"mutmut failed with exit code {code} (--work DIR keeps its folder)", file=sys.stderr)
        return code

    equivalent = load_equivalent()
    statuses = {n: results(work, n, patterns_of[n]) for n in names}
    label = lambda n: module_path(n) + (" (only " + ", ".join(EXTRA_LABEL[n]) + ")" if n in EXTRA_LABEL else
                                        f" ({n.partition(':')[2]})" if ":" in n else "")
    rows = [(label(n), statuses[n]) for n in names if n in MODULES]
    if len(rows) > 1:
        rows.append(("total", {k: v for _, found in rows for k, v in found.items()}))
    rows += [(label(n), statuses[n]) for n in names if n in EXTRA]  # after the total: not in it
    print(f"\nwall time {wall:.0f} s\n")
    print("\n".join(table(rows, equivalent)))

    stale = [k for k in equivalent if any(found.get(k) == "killed" for found in statuses.values())]
    if stale:
        print(f"\nlisted as equivalent but killed now (stale list?): {', '.join(stale)}")

    if args.show_survivors:
        os.chdir(work)  # mutmut reads its config and mutants/ from the current folder
        for n in names:
            undetected = {k: status for k, status in statuses[n].items() if status != "killed"}
            print(f"\n## {label(n)}: {len(undetected)} not killed")
            for key, status in sorted(undetected.items(), key=lambda item: item[1] == "no tests"):
                why = f", equivalent: {equivalent[key]}" if key in equivalent else ""
                print(f"\n[{status}{why}]\n{located_diff(key, module_path(n))}")
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--tree", type=Path, default=HERE.parent, help="the checkout to test (default: this one)")
    parser.add_argument("--module", nargs="+", choices=[*MODULES, *EXTRA], metavar="NAME",
                        help=f"modules under pytest_rknn/, e.g. checks detection/nms (default: all of "
                             f"{', '.join([*MODULES, *EXTRA])})")
    parser.add_argument("--work", type=Path, help="scratch folder to keep (default: a temporary one, removed)")
    parser.add_argument("--show-survivors", action="store_true", help="print the diff of every mutant no test caught")
    parser.add_argument("--max-children", type=int, default=2)
    args = parser.parse_args()

    ensure_mutmut()
    names = args.module or [*MODULES, *EXTRA]
    work = (args.work or Path(tempfile.mkdtemp(prefix="pytest-rknn-mutation-"))).resolve()
    try:
        return run(args, names, work)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
