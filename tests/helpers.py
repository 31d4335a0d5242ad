"""Helpers shared by test modules (import: ``from helpers import ...``; pytest puts tests/ on sys.path)."""

from __future__ import annotations


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
