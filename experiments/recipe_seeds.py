"""Does the default controller recipe reproduce? Train it from several training seeds with the
built-in selection, then evaluate every pick on held-out seeds against every tuned rival (issue 23).

    python experiments/recipe_seeds.py --config configs/digits-mlp-controller.yaml --train-seeds 1 2 3 \\
        --seeds 1000-1039 --out results/recipe/digits
    python experiments/recipe_seeds.py --config configs/digits-mlp-controller.yaml --train-seeds 4 5 6 7 8 9 \\
        --runs-per-pick 3 --seeds 1000-1039 --out results/recipe/digits-runs3
    python experiments/recipe_seeds.py --config configs/ablation/ensemble.yaml --train-seeds 1 2 3 4 5 6 7 8 9 \\
        --runs-per-pick 3 --seeds 1000-1039 --out results/recipe/ensemble

Each training seed is one run of the recipe (its ``task.seed``: PPO's seed and the child seeds it
draws). With ``--runs-per-pick 1`` (the default) each run is ``lrservice train-controller`` into
``OUT/s<seed>`` and its ``controller.pt`` is that run's selection pick. With ``--runs-per-pick K``
the seeds are taken K at a time and each group is one ``train-controller`` with
``controller.train_seeds`` set to the group, into ``OUT/g<s1>-<s2>-...``: its ``controller.pt`` is
the best pick across the group's runs (``pick<s1>-...``), or with ``controller.across_runs: ensemble``
their picks acting together (``ens<s1>-...``), and every run's own pick is evaluated beside it
(``seed<s>``), so one evaluation compares the one-run and the K-run recipe on the same held-out
seeds. Then one ``lrservice evaluate-controller`` with every pick into ``OUT/evaluate``. Logs go
to ``OUT/*.log``; every training is started with ``--resume``, so an interrupted one goes on and
a finished one is not rerun.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--train-seeds", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--runs-per-pick", type=int, default=1,
                        help="runs per controller.train_seeds group (1: each run is its own pick)")
    parser.add_argument("--seeds", default="1000-1039", help="held-out seeds for evaluate-controller")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    k = args.runs_per_pick
    if k < 1 or len(args.train_seeds) % k:
        parser.error(f"--runs-per-pick {k}: must be >= 1 and divide the {len(args.train_seeds)} training seeds")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(Path(args.config).read_text())
    picks = []
    for i in range(0, len(args.train_seeds), k):
        group = args.train_seeds[i:i + k]
        name = f"s{group[0]}" if k == 1 else "g" + "-".join(map(str, group))
        run = out / name
        controller = {**base["controller"], "checkpoint_dir": str(run)}
        task = {**base["task"]}
        if k == 1:
            task["seed"] = group[0]
        else:
            controller["train_seeds"] = group
        path = out / f"{name}.yaml"
        path.write_text(yaml.safe_dump({**base, "task": task, "controller": controller}, sort_keys=False))
        with open(out / f"{name}.log", "a") as log:  # --resume: an interrupted run goes on, a finished one exits
            done = subprocess.run([sys.executable, "-m", "lrservice", "train-controller", "--config", str(path),
                                   "--resume"], stdout=log, stderr=subprocess.STDOUT)
        if done.returncode:
            print(f"training {name} failed; see {out / f'{name}.log'}")
            return done.returncode
        if k == 1:
            picks += ["--controller", f"seed{group[0]}={run / 'controller.pt'}"]
        else:
            made = "ens" if base["controller"].get("across_runs") == "ensemble" else "pick"
            picks += ["--controller", f"{made}{'-'.join(map(str, group))}={run / 'controller.pt'}"]
            picks += [a for s in group for a in ("--controller", f"seed{s}={run / f'seed_{s}' / 'controller.pt'}")]
        print(f"trained {name}: {run / 'controller.pt'}", flush=True)
    with open(out / "evaluate.log", "w") as log:
        done = subprocess.run([sys.executable, "-m", "lrservice", "evaluate-controller", "--config", args.config,
                               *picks, "--seeds", args.seeds, "--output", str(out / "evaluate")],
                              stdout=log, stderr=subprocess.STDOUT)
    print(f"evaluate-controller: rc {done.returncode}; see {out / 'evaluate.log'}")
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
