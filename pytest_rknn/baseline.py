"""Baselines: the metrics a spec had, one readable JSON file per spec, meant to be reviewed in git.

An entry is kept per toolkit version and backend ("2.5.0-sim") and holds the model's sha256 and
the spec's metrics config hash; a lookup for another model or config finds no baseline.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Tuple

from .atomic import write_atomic
from .errors import SPEC, RknnError

FORMAT = 1
RERECORD = "record it with --rknn-baseline-update"
FIX_FILE = "fix it, or delete it and re-record with --rknn-baseline-update"


def entry_key(version: str, backend: str) -> str:
    return f"{version}-{backend}"


def rounded(value):
    """Eight significant digits: enough to see a regression, few enough for a quiet diff."""
    if isinstance(value, float) and math.isfinite(value):
        return float(f"{value:.8g}")
    return value


class BaselineStore:
    def __init__(self, directory: Path, rootdir: Path):
        self.directory = Path(directory)
        self.rootdir = Path(rootdir)
        self._files: Dict[Path, dict] = {}
        self.not_updated: List[Path] = []  # files the last update could not write

    def file_for(self, spec_name: str, spec_file: Optional[str]) -> Path:
        """DIR/<spec's folder relative to the rootdir>/<spec>.json, so equal names in two folders never meet."""
        if spec_file:
            try:
                relative = Path(spec_file).resolve().relative_to(self.rootdir.resolve())
                return self.directory / relative.parent / f"{spec_name}.json"
            except ValueError:
                pass
        return self.directory / f"{spec_name}.json"

    def shown(self, path: Path) -> str:
        try:
            return str(path.resolve().relative_to(Path.cwd().resolve()))
        except ValueError:
            return str(path)

    def read(self, path: Path) -> dict:
        if path not in self._files:
            self._files[path] = self._load(path)
        return self._files[path]

    def check_readable(self, spec_name: str, spec_file) -> None:
        """Raise the SPEC error of this spec's baseline file if it cannot be read (so an update
        fails the spec's items rather than overwrite entries it cannot see)."""
        self.read(self.file_for(spec_name, spec_file))

    def _load(self, path: Path) -> dict:
        try:
            return _parse(path)
        except ValueError as exc:
            raise RknnError(SPEC, f"baseline {self.shown(path)}: {exc}; {FIX_FILE}") from None

    def lookup(self, spec_name: str, spec_file: Optional[str], version: str, backend: str, model_sha256: str,
               config_hash: str) -> Tuple[Optional[dict], str]:
        """(the entry, "") or (None, why there is none)."""
        path = self.file_for(spec_name, spec_file)
        shown = self.shown(path)
        entry = self.read(path).get("entries", {}).get(entry_key(version, backend))
        if entry is None:
            return None, f"no baseline for {spec_name} [{entry_key(version, backend)}] in {shown}; {RERECORD}"
        if entry.get("model_sha256") != model_sha256:
            return None, (f"no baseline for this model: {shown} [{entry_key(version, backend)}] was recorded for "
                          f"model sha256 {str(entry.get('model_sha256'))[:12]}, this one is {model_sha256[:12]}; "
                          f"{RERECORD}")
        if entry.get("config_hash") != config_hash:
            return None, (f"no baseline for this model config: {shown} [{entry_key(version, backend)}] was recorded "
                          f"with config {entry.get('config_hash')}, the spec now gives {config_hash}; {RERECORD}")
        if not entry.get("metrics"):  # a hand-written entry: a comparison with it would compare nothing
            return None, f"no metrics in the baseline {shown} [{entry_key(version, backend)}]; {RERECORD}"
        return entry, ""

    def update(self, records: Iterable[dict]) -> List[str]:
        """Write the metrics of these records into their files (other entries stay); one line per file.
        A file that cannot be read or written is left as it is, with a line saying why (see not_updated)."""
        by_file: Dict[Path, List[dict]] = {}
        for record in records:
            if record.get("metrics") and record.get("fingerprint", {}).get("model_sha256"):
                by_file.setdefault(self.file_for(record["spec"], record["spec_file"]), []).append(record)
        lines = []
        self.not_updated = []
        for path, file_records in sorted(by_file.items()):
            try:
                lines.append(self._update_file(path, file_records))
            except ValueError as exc:  # not a baseline: its entries cannot be kept, so it is not overwritten
                self.not_updated.append(path)
                lines.append(f"{self.shown(path)}: NOT updated: {exc}; {FIX_FILE}")
            except OSError as exc:
                self.not_updated.append(path)
                lines.append(f"{self.shown(path)}: NOT updated: {exc}")
        return lines

    def _update_file(self, path: Path, records: List[dict]) -> str:
        old = _parse(path)
        entries = dict(old.get("entries", {}))
        for record in records:
            entries[entry_key(record["version"], record["backend"])] = _entry(record)
        new = {"format": FORMAT, "spec": records[0]["spec"], "entries": dict(sorted(entries.items()))}
        keys = ", ".join(sorted(entry_key(r["version"], r["backend"]) for r in records))
        if new == old:
            return f"{self.shown(path)}: unchanged ({keys})"
        write_atomic(path, json.dumps(new, indent=2, sort_keys=True) + "\n")
        self._files[path] = new
        return f"{self.shown(path)}: {'updated' if old else 'created'} ({keys})"


def _parse(path: Path) -> dict:
    """A baseline file's content, {} when there is none; ValueError saying what is wrong with it."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"cannot be read ({exc})") from None
    try:
        data = json.loads(text)
        if not isinstance(data, dict) or not isinstance(data.get("entries", {}), dict):
            raise ValueError("expected an object with an `entries` object")
        for key, entry in data.get("entries", {}).items():
            if not isinstance(entry, dict) or not isinstance(entry.get("metrics", {}), dict):
                raise ValueError(f"entry {key!r} is not an object with a `metrics` object")
    except ValueError as exc:
        raise ValueError(f"not a pytest-rknn baseline ({exc})") from None
    return data


def _entry(record: dict) -> dict:
    # Not the .rknn sha256: the toolkit's export is not byte-for-byte reproducible, so it would
    # change the file on every re-record.
    fingerprint = record["fingerprint"]
    return {
        "model_sha256": fingerprint["model_sha256"],
        "config_hash": fingerprint["config_hash"],
        "toolkit_version": fingerprint.get("toolkit_version"),
        "metrics": {name: rounded(value) for name, value in sorted(record["metrics"].items())},
    }
