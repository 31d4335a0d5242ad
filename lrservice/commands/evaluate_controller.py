"""``lrservice evaluate-controller``: does a learned controller beat tuned baselines? (no Ray needed)

    lrservice evaluate-controller --config configs/digits-mlp-controller.yaml --controller results/controller/digits-mlp
    lrservice evaluate-controller --config configs/mnist1d-mlp.yaml --controller a=ctrl-a.pt --controller b=ctrl-b.pt
    lrservice evaluate-controller --config configs/digits-mlp-controller.yaml --controller pretrained:digits-mlp \
        --seeds 1000-1099

Tunes constant, cosine and the modern rivals (``evaluate.rivals``: warmup + cosine, WSD,
OneCycle, linear decay, Schedule-Free AdamW, Prodigy) on the config's grids and tune seeds,
then runs them and each controller (deterministic policy, from every initial LR) on held-out
seeds, and writes paired per-seed differences with 95% bootstrap CIs against tuned cosine,
tuned constant and the best tuned rival (picked on the tune seeds; see docs/controller.md).
The child task is the config's ``task`` section, so a controller trained elsewhere is
evaluated zero-shot.
"""

from __future__ import annotations

import argparse
import time

from lrservice.commands.options import load_run_config, progress
from lrservice.config import ConfigError


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "evaluate-controller", help="compare learned controllers with tuned rivals (constant, cosine, WSD, "
                                    "schedule-free, ...) on held-out seeds",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--config", required=True, help="YAML/JSON run config: its task and evaluate sections")
    parser.add_argument("--controller", action="append", required=True, metavar="[NAME=]PATH",
                        help="exported controller (.pt), checkpoint or train-controller output dir; repeatable")
    parser.add_argument("--seeds", default=None, metavar="FIRST-LAST|S,S,...",
                        help="held-out seeds instead of evaluate.seeds, e.g. 1000-1099 (never the tune seeds)")
    parser.add_argument("--output", default=None, help="output directory (default: evaluate.output_dir)")
    parser.add_argument("--download", action="store_true", help="let torchvision datasets download into task.data_dir")
    parser.set_defaults(func=run, address=None, resume=False)
    return parser


def _named(specs: list[str], taken: tuple[str, ...]) -> dict[str, str]:
    named = {}
    for i, spec in enumerate(specs):
        name, sep, path = spec.partition("=")
        if not sep:
            name, path = ("controller" if len(specs) == 1 else f"controller{i + 1}"), spec
        if not name.replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"--controller: {name!r} is not a usable name; use letters, digits, '-' and '_'")
        if name in named or name in taken:
            raise ConfigError(f"--controller: the name {name!r} is taken; give each controller its own NAME=")
        named[name] = path
    return named


def parse_seeds(spec: str) -> list[int]:
    """``--seeds``: an inclusive range ``FIRST-LAST`` or a comma-separated list of integers (the
    evaluate section then checks them like seeds from the file: distinct, non-negative, not tuned on)."""
    first, dash, last = spec.partition("-")
    try:
        seeds = list(range(int(first), int(last) + 1)) if dash else [int(s) for s in spec.split(",")]
    except ValueError:
        seeds = []
    if not seeds:
        raise ConfigError(f"--seeds: {spec!r} is not allowed; give FIRST-LAST (e.g. 1000-1099) or integers "
                          "separated by commas")
    return seeds


def run(args: argparse.Namespace) -> int:
    config = load_run_config(args, **({"evaluate": {"seeds": parse_seeds(args.seeds)}} if args.seeds else {}))
    from lrservice.control.rivals import check_rivals, rivals

    check_rivals(config)  # bad input is refused before torch loads
    import torch  # torch and the controller stack: on use, so `lrservice --help` stays fast (docs/architecture.md)

    from lrservice.child.trainer import load_task_data
    from lrservice.control.checkpoint import resolve_checkpoint
    from lrservice.control.controller import LearnedController
    from lrservice.control.evaluate import REFERENCES, evaluate_controllers
    from lrservice.control.evidence import write_evaluation

    field = rivals(config)
    taken = (*REFERENCES, *(r.name for r in field))
    paths = {name: resolve_checkpoint(path) for name, path in _named(args.controller, taken).items()}  # before any work
    torch.set_num_threads(1)
    ev, task = config.evaluate, config.task
    controllers = {name: LearnedController.from_checkpoint(p) for name, p in paths.items()}
    initial_lrs = ev.initial_lrs or config.controller.initial_lrs
    started = time.perf_counter()
    data = load_task_data(task)
    progress(f"[lrservice] evaluate: {task.dataset}/{task.model}, {task.steps} steps; "
             f"tune seeds {list(ev.tune_seeds)}, "
             f"held-out seeds {list(ev.seeds)}")
    runs, rows, tuned, best = evaluate_controllers(task, data, controllers, field, ev.tune_seeds, ev.seeds,
                                                   initial_lrs, log=progress)
    tuning = {r.name: len(r.points) * len(ev.tune_seeds) * task.steps for r in field}
    costs = {name: f"{steps:,} tuning + {task.steps}/seed" for name, steps in tuning.items()}
    for name, ctrl in controllers.items():
        spent = float(ctrl.payload.get("training", {}).get("child_steps", 0) or 0)
        costs[name] = f"{spent:,.0f} training (pretrained, reused) + {task.steps}/seed"
    out = write_evaluation(args.output or ev.output_dir, runs, rows, tuned, best, costs,
                           f"{task.dataset}/{task.model}, {task.steps} steps, {len(ev.seeds)} held-out seeds",
                           {"task": config.to_dict()["task"], "evaluate": config.to_dict()["evaluate"],
                            "controllers": {k: str(v) for k, v in paths.items()}, "tuned": tuned, "best_rival": best,
                            "tuning_child_steps": sum(tuning.values()), "wall_s": time.perf_counter() - started})
    print((out / "summary.md").read_text(), flush=True)
    progress(f"[lrservice] evaluation written to {out} ({time.perf_counter() - started:.0f} s)")
    return 0
