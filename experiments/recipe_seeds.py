"""Does the default controller recipe reproduce? Train it from several training seeds with the
built-in selection, then evaluate every pick on held-out seeds against every tuned rival (issue 23).

    python experiments/recipe_seeds.py --config configs/digits-mlp-controller.yaml --train-seeds 1 2 3 \\
        --seeds 1000-1039 --out results/recipe/digits

Each training seed is the task's ``seed`` (PPO's seed and the child seeds it draws); each run is
``lrservice train-controller`` into ``OUT/s<seed>`` (its ``controller.pt`` is the selection's
pick), then one ``lrservice evaluate-controller`` with every pick into ``OUT/evaluate``.
Logs go to ``OUT/*.log``; a finished training is not rerun.
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
    parser.add_argument("--seeds", default="1000-1039", help="held-out seeds for evaluate-controller")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    base = yaml.safe_load(Path(args.config).read_text())
    picks = []
    for seed in args.train_seeds:
        run = out / f"s{seed}"
        config = {**base, "task": {**base["task"], "seed": seed},
                  "controller": {**base["controller"], "checkpoint_dir": str(run)}}
        path = out / f"s{seed}.yaml"
        path.write_text(yaml.safe_dump(config, sort_keys=False))
        if not (run / "controller.pt").exists():
            with open(out / f"s{seed}.log", "w") as log:
                done = subprocess.run([sys.executable, "-m", "lrservice", "train-controller", "--config", str(path)],
                                      stdout=log, stderr=subprocess.STDOUT)
            if done.returncode:
                print(f"training seed {seed} failed; see {out / f's{seed}.log'}")
                return done.returncode
        picks += ["--controller", f"seed{seed}={run / 'controller.pt'}"]
        print(f"trained seed {seed}: {run / 'controller.pt'}", flush=True)
    with open(out / "evaluate.log", "w") as log:
        done = subprocess.run([sys.executable, "-m", "lrservice", "evaluate-controller", "--config", args.config,
                               *picks, "--seeds", args.seeds, "--output", str(out / "evaluate")],
                              stdout=log, stderr=subprocess.STDOUT)
    print(f"evaluate-controller: rc {done.returncode}; see {out / 'evaluate.log'}")
    return done.returncode


if __name__ == "__main__":
    raise SystemExit(main())
