"""Helpers shared by test modules (import: ``from helpers import ...``; pytest puts tests/ on sys.path)."""

from __future__ import annotations

import os
import socket
from pathlib import Path


def record_child(spec: dict, restore_dir=None, on_checkpoint=None) -> list[dict]:
    """Run a one-child compare trial without Tune; its rows as the tables get them.

    ``on_checkpoint(step, directory)`` sees every checkpoint the trial saves (valid during the call)."""
    from lrservice.compare.trainable import child_reports, run_trial

    reports: list[dict] = []

    def report(metrics, directory):
        reports.append(dict(metrics))
        if directory is not None and on_checkpoint is not None:
            on_checkpoint(metrics["step"], directory)

    run_trial(spec, report, restore_dir=restore_dir)
    return child_reports(reports)[0]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_tree(root: int) -> list[int]:
    """``root`` and all its descendants, from /proc (no psutil needed)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                stat = Path(f"/proc/{entry}/stat").read_text()
            except OSError:
                continue
            children.setdefault(int(stat.rsplit(")", 1)[1].split()[1]), []).append(int(entry))
    out, todo = [], [root]
    while todo:
        pid = todo.pop()
        out.append(pid)
        todo.extend(children.get(pid, []))
    return out
