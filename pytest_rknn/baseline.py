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

    def _load(self, path: Path) -> dict:
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return {}
        try:
            data = json.loads(text)
            if not isinstance(data, dict) or not isinstance(data.get("entries", {}), dict):
                raise ValueError("expected an object with an `entries` object")
        except ValueError as exc:
            raise RknnError(SPEC, f"baseline {self.shown(path)}: not a pytest-rknn baseline ({exc}); fix it, or "
                                  f"delete it and {RERECORD}") from None
        return data

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
        return entry, ""

    def update(self, records: Iterable[dict]) -> List[str]:
        """Write the metrics of these records into their files (other entries stay); one line per file."""
        by_file: Dict[Path, List[dict]] = {}
        for record in records:
            if record["metrics"] and record["fingerprint"].get("model_sha256"):
                by_file.setdefault(self.file_for(record["spec"], record["spec_file"]), []).append(record)
        lines = []
        for path, file_records in sorted(by_file.items()):
            old = self._load(path)
            entries = dict(old.get("entries", {}))
            for record in file_records:
                entries[entry_key(record["version"], record["backend"])] = _entry(record)
            new = {"format": FORMAT, "spec": file_records[0]["spec"], "entries": dict(sorted(entries.items()))}
            keys = ", ".join(sorted(entry_key(r["version"], r["backend"]) for r in file_records))
            if new == old:
                lines.append(f"{self.shown(path)}: unchanged ({keys})")
                continue
            write_atomic(path, json.dumps(new, indent=2, sort_keys=True) + "\n")
            self._files[path] = new
            lines.append(f"{self.shown(path)}: {'updated' if old else 'created'} ({keys})")
        return lines


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
