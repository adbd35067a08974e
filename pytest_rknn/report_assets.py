"""The files a report refers to (the detection overlays), copied next to it: `REPORT.html` gets
`REPORT-files/`, so the pictures outlive pytest's basetemp, which keeps only the last three runs and
trims the overlays of passed items at the end of the session.

The folder is filled under a temporary name and then swapped in, so a report never names a file of
an older run, and a run killed half way leaves the previous folder whole."""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from pathlib import Path
from typing import Dict, List

FOLDER_SUFFIX = "-files"


def files_folder(report: Path) -> Path:
    """`out/report.html` -> `out/report-files`."""
    report = Path(report)
    return report.with_name(report.stem + FOLDER_SUFFIX)


def with_copied_assets(document: dict, report: Path) -> dict:
    """A copy of `document` whose items' `detection.overlays` name copies in files_folder(report), as
    paths relative to the report's folder (so the report and its folder can be moved together). A
    picture that no longer exists keeps its path (the HTML report says it is missing). Without any
    picture to copy, no folder is made (and one of an earlier run is removed)."""
    report = Path(report)
    folder = files_folder(report)
    result = copy.deepcopy(document)
    copies: Dict[Path, str] = {}  # source -> name inside the folder
    for item in result.get("items") or []:
        detection = item.get("detection") if isinstance(item, dict) else None
        if not isinstance(detection, dict) or not isinstance(detection.get("overlays"), list):
            continue
        paths: List[str] = []
        for path in detection["overlays"]:
            source = Path(str(path))
            if not source.is_file():
                paths.append(path)
                continue
            name = copies.setdefault(source, _unique_name(item, source, copies.values()))
            paths.append(f"{folder.name}/{name}")
        detection["overlays"] = paths
    _replace_folder(folder, copies)
    return result


def _unique_name(item: dict, source: Path, taken) -> str:
    """SPEC/VERSION-BACKEND/FILE: readable, and apart for every item."""
    parts = [str(item.get(key) or "-") for key in ("spec", "version", "backend")]
    name = "/".join(_safe(p) for p in (parts[0], f"{parts[1]}-{parts[2]}", source.name))
    stem, n = name, 2
    while name in taken:  # two spec files of the same name in different folders
        name = f"{stem.rsplit('/', 1)[0]}/{n}_{source.name}"
        n += 1
    return name


def _safe(text: str) -> str:
    return "".join(c if c.isalnum() or c in "._-" else "_" for c in text) or "_"


def _replace_folder(folder: Path, copies: Dict[Path, str]) -> None:
    if not copies:
        if folder.is_dir():
            shutil.rmtree(folder, ignore_errors=True)
        return
    folder.parent.mkdir(parents=True, exist_ok=True)
    fresh = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".tmp", dir=folder.parent))
    try:
        for source, name in copies.items():
            target = fresh / name
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(source, target)
        os.chmod(fresh, 0o755)
        old = None
        if folder.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", suffix=".old", dir=folder.parent))
            os.replace(folder, old / "files")
        os.replace(fresh, folder)
    except BaseException:
        shutil.rmtree(fresh, ignore_errors=True)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
