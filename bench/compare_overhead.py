"""What the Tune path costs over the compute it runs: ``compare`` against the same child runs in pools.

One run, side by side: (1) ``lrservice compare`` on the config (default: the README's main
job, configs/digits-mlp.yaml) on a local embedded Ray, timed from the call to the end
(Ray start, the controller check, every phase, Parquet, TensorBoard and report included);
(2) the very child runs that comparison trained — every tune child, every eval child with
the params the tune phase picked, every PBT member's children (each at its member's first LR;
an exploit changes an LR and copies weights, not the amount of compute) — trained without Ray
through the same runner (:func:`lrservice.runner.run_children`) in one process: all children
on the task's own optimizer in one pool (batched when the model allows), optimizer-level kinds
in another. Prints both walls, the ratio, child steps per second and the machine's matmul rate.

Run: ``python bench/compare_overhead.py [--config configs/digits-mlp.yaml]``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("LRSERVICE_DASHBOARD", "0")
sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import preamble, table  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


def child_runs_of(run_dir: Path, config):
    """Every child run the comparison trained, as runner inputs (from its trials table)."""
    import pandas as pd

    from lrservice.control.checkpoint import resolve_checkpoint
    from lrservice.kinds import get_kind
    from lrservice.runner import ChildRun

    trials = pd.read_parquet(run_dir / "trials.parquet")
    steps = pd.read_parquet(run_dir / "steps.parquet")
    kinds = {arm.name: arm.kind for arm in config.compare.arms}
    runs = []
    for row in trials[trials["phase"].isin(["tune", "eval", "pbt"])].itertuples():
        kind = kinds[row.arm]
        if get_kind(kind).population:
            if row.phase == "eval":
                continue  # the deployed child is one of the members: counted there
            first = steps[(steps["trial_id"] == row.trial_id)].sort_values("step").iloc[0]
            runs.append(ChildRun("constant", {"lr": float(first["lr"])}, int(row.seed)))
            continue
        params = json.loads(row.params)
        if get_kind(kind).learned:
            params["checkpoint"] = str(resolve_checkpoint(params["checkpoint"]))
        runs.append(ChildRun(kind, params, int(row.seed)))
    return runs


def pool_wall(task, runs) -> tuple[float, dict[str, int]]:
    """Seconds to train ``runs`` in pools without Ray, and how many children each pool held."""
    from lrservice.child.trainer import load_task_data
    from lrservice.kinds import get_kind
    from lrservice.runner import run_children

    data = load_task_data(task)
    own = [get_kind(r.kind).optimizer_factory(task, r.params) is not None for r in runs]
    groups = {"task's optimizer": [r for r, o in zip(runs, own) if not o],
              "own optimizer": [r for r, o in zip(runs, own) if o]}
    started = time.perf_counter()
    modes = {}
    for name, group in groups.items():
        if group:
            result = run_children(task, group, data=data)
            modes[f"{name} ({result.mode})"] = len(group)
    return time.perf_counter() - started, modes


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", default=str(ROOT / "configs" / "digits-mlp.yaml"))
    args = parser.parse_args()
    import torch

    from lrservice.compare.arms import check_compare
    from lrservice.compare.experiment import run_compare
    from lrservice.config import load_config

    preamble(f"compare vs the same child runs in pools without Ray ({Path(args.config).name})")
    config = load_config(args.config)
    with tempfile.TemporaryDirectory(prefix="lrs-bench-") as out:
        config = config.replace(compare={"output_dir": out, "name": "bench"})
        check_compare(config)
        lines: list[str] = []
        started = time.perf_counter()
        run_dir = run_compare(config, log=lines.append, checked=True)
        compare_s = time.perf_counter() - started
        import ray

        ray.shutdown()
        runs = child_runs_of(run_dir, config)
    steps = len(runs) * config.task.steps
    print(f"[lrservice] compare: {compare_s:.1f} s for {len(runs)} child runs x {config.task.steps} steps "
          f"(Ray start, every phase, tables and report)", flush=True)
    pool_s, modes = pool_wall(config.task, runs)
    print(f"[lrservice] pools without Ray ({torch.get_num_threads()} torch threads): {pool_s:.1f} s; "
          + ", ".join(f"{k}: {v} children" for k, v in modes.items()))
    print(table(["path", "wall s", "child steps / s", "ratio to pools"], [
        ["compare (Tune trials, a batch of children each)", f"{compare_s:.1f}", f"{steps / compare_s:,.0f}",
         f"{compare_s / pool_s:.2f}"],
        ["the same child runs in pools, no Ray", f"{pool_s:.1f}", f"{steps / pool_s:,.0f}", "1.00"],
    ]))
    phases = [line for line in lines if "child runs finished in" in line or "members x" in line]
    for line in phases:
        print(line)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
