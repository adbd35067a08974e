"""Image inputs as arrays, kept by the images' bytes and the preprocessing that made them, so a
warm rerun does not decode and resize them again. One `KEY.npz` per image list in a folder of
the result cache (evicted with it, least recently used first); an unreadable file is a miss."""

from __future__ import annotations

import hashlib
import io
import json
import os
import zipfile
from pathlib import Path
from typing import List, Optional

import numpy as np

from .atomic import write_atomic
from .onnx_model import file_sha256

FORMAT = 1  # bump when the preprocessing changes what an array holds
_INPUTS_CODE = Path(__file__).with_name("inputs.py")


def key(paths: List[str], settings: dict) -> str:
    """The images' bytes, in order, and every setting that shapes their arrays."""
    material = {"format": FORMAT, "images": [file_sha256(Path(p)) for p in paths], "settings": settings,
                "code": file_sha256(_INPUTS_CODE)}
    return hashlib.sha256(json.dumps(material, sort_keys=True, default=str).encode()).hexdigest()


def load(folder: Optional[Path], key: str, count: int) -> Optional[List[np.ndarray]]:
    if folder is None:
        return None
    path = folder / f"{key}.npz"
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = [data[f"a{i}"] for i in range(count)]
        os.utime(path)  # recently used
        return arrays
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):  # none yet, or damaged
        return None


def store(folder: Optional[Path], key: str, arrays: List[np.ndarray]) -> None:
    """Written atomically: a reader sees a whole file or none."""
    if folder is None:
        return
    buffer = io.BytesIO()
    np.savez(buffer, **{f"a{i}": a for i, a in enumerate(arrays)})  # type: ignore[arg-type]  # see jobdir.write_job
    try:
        write_atomic(folder / f"{key}.npz", buffer.getvalue())
    except OSError:
        pass  # decoded again next time
