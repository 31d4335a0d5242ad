"""Files a reader never sees half-written, and Tune's per-trial report files read back.

Every write goes to a temp file beside the target and is ``os.replace``-d over it, so a
crash leaves either the old file or the new one, never a partial one; the temp file is
removed when the write fails. Pure I/O: no Ray here.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp)`` on a sibling temp path, then move it over ``path``; returns ``path``.

    ``write`` may make ``tmp`` a file or a directory (e.g. TensorBoard runs). A directory that
    replaces one is swapped in by two renames (the old one moved aside, then removed): a reader
    sees the old tree or the new one, never half of either.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = str(path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp"))  # umask permissions
    try:
        write(tmp)
        if os.path.isdir(tmp) and path.is_dir():
            old = f"{tmp}.old"
            os.replace(path, old)
            os.replace(tmp, path)
            shutil.rmtree(old)
        else:
            os.replace(tmp, path)
    except BaseException:
        if os.path.isdir(tmp):
            shutil.rmtree(tmp)
        elif os.path.exists(tmp):
            os.unlink(tmp)
        raise
    return path


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``text`` into ``path``, atomically."""
    return write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """``data`` as indented, key-sorted JSON into ``path``, atomically (non-JSON values via ``str``)."""
    return write_text(path, json.dumps(data, indent=2, sort_keys=True, default=str))


def write_parquet(table: pa.Table, path: str | os.PathLike) -> Path:
    """An Arrow table as a Parquet file at ``path``, atomically."""
    return write_atomic(path, lambda tmp: pq.write_table(table, tmp))


def read_json_lines(path: str | os.PathLike) -> list[dict]:
    """The JSON objects of a JSON-lines file such as Tune's ``result.json``, in order.

    A missing file is empty; blank lines and a last line cut short by a crash are skipped.
    """
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text().splitlines():
        line = line.strip()
        if line:
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return rows
