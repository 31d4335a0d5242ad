"""The Tune comparison of LR schedules: trials, experiments, Parquet results, report.

- :mod:`.arms`: arm params, grids and winners as plain trial specs (no Ray).
- :mod:`.trainable`: one trial (:func:`run_trial`) and its Tune wrapper.
- :mod:`.experiment`: :func:`run_compare`, the tune / eval / PBT phases with resume.
- :mod:`.results`: Parquet schemas, rows from reports, dedupe, ranked summaries.
- :mod:`.report`: plots, ``report.md`` and ``report.html``.

Submodules are imported on use so that ``import lrservice.compare`` stays light. Calling the
package, ``lrservice.compare(config, resume=False, overwrite=False)``, runs a comparison
(:func:`lrservice.api.compare`).
"""

from __future__ import annotations

from lrservice.api import make_command_package

make_command_package(__name__, {  # lrservice.compare(config, ...) runs the comparison (lrservice.api.compare)
    "run_compare": "experiment", "run_dir_for": "experiment",
    "run_trial": "trainable", "tune_trial": "trainable",
    "STEPS_SCHEMA": "results", "TRIALS_SCHEMA": "results", "arm_summary": "results",
    "build_report": "report", "load_run": "report",
})
