"""TensorBoard event files from the eval-phase step rows: one run per ``arm/seed<N>``.

Tune's own event files (one run per trial dir, named by trial id) are kept, but comparing
schedules needs one chart per metric with one readable line per arm and seed: so after a
comparison we write ``<run dir>/tensorboard/<arm>/seed<N>/events.out.tfevents.*`` with the
scalars ``val_loss``, ``train_loss``, ``val_accuracy`` and ``lr`` at each child step (a PBT
arm: its deployed member's history). The directory is built beside and swapped in by
:func:`lrservice.files.write_atomic`, so TensorBoard never reads half of it.
"""

from __future__ import annotations

import math
import os
from pathlib import Path

import pandas as pd
from tensorboardX import SummaryWriter

from lrservice.files import write_atomic

DIRNAME = "tensorboard"
TAGS = ("val_loss", "train_loss", "val_accuracy", "lr")


def run_name(arm: str, seed: int) -> str:
    """The TensorBoard run of one arm on one seed (a path relative to the logdir)."""
    return f"{arm}/seed{int(seed)}"


def write_tensorboard(steps: pd.DataFrame, run_dir: str | os.PathLike) -> Path:
    """Write the eval rows of ``steps`` as TensorBoard runs under ``run_dir/tensorboard``; returns it."""
    ev = steps[steps["phase"] == "eval"]

    def write(tmp: str) -> None:
        Path(tmp).mkdir()
        for (arm, seed), g in ev.groupby(["arm", "seed"], sort=True):
            writer = SummaryWriter(logdir=str(Path(tmp) / run_name(arm, seed)), flush_secs=3600)
            for row in g.sort_values("step").itertuples():
                for tag in TAGS:
                    value = getattr(row, tag)
                    if value is not None and not (isinstance(value, float) and math.isnan(value)):
                        writer.add_scalar(tag, float(value), int(row.step))
            writer.close()

    return write_atomic(Path(run_dir) / DIRNAME, write)
