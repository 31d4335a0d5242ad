"""``lrservice schedule``: list the policy zoo, or plot one policy (or a composite) to a PNG.

    lrservice schedule list
    lrservice schedule plot --policy COS --k0 0 --k1 0.1 --l 100 [--steps N] [--out cos.png]
    lrservice schedule plot --policy NSTEP --k0 0.1 --gamma 0.1 --l 300,600
    lrservice schedule plot --config-json '{"compose": [...], "boundaries": [...]}'
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from lrservice.schedules import POLICIES, Composite, PolicyError, policy_from_dict


def add_parser(subparsers) -> argparse.ArgumentParser:
    parser = subparsers.add_parser(
        "schedule", help="list the LRBench policy zoo or plot a policy", description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="schedule_command", metavar="ACTION")
    sub.required = True
    sub.add_parser("list", help="print the 34 policies with their parameters and formulas")
    plot = sub.add_parser("plot", help="plot lr against step to a PNG and print its path")
    plot.add_argument("--policy", help="zoo policy name, e.g. COS (see `schedule list`)")
    plot.add_argument("--k0", type=float, help="start / floor learning rate")
    plot.add_argument("--k1", type=float, help="peak learning rate")
    plot.add_argument("--gamma", type=float, help="decay base (slope for SIG)")
    plot.add_argument("--p", type=float, help="power (POLY, INV)")
    plot.add_argument("--l", help="period in steps, or comma-separated boundaries for NSTEP (e.g. 300,600)")
    plot.add_argument("--config-json",
                      help='a policy dict instead of flags, e.g. {"compose": [...], "boundaries": [...]}')
    plot.add_argument("--steps", type=int, help="number of steps to plot (default 3*l, else 1000)")
    plot.add_argument("--out", help="PNG path (default schedule-<NAME>.png)")
    parser.set_defaults(func=run)
    return parser


def run(args: argparse.Namespace) -> int:
    if args.schedule_command == "list":
        return _list()
    return _plot(args)


def _list() -> int:
    for spec in POLICIES.values():
        print(f"{spec.name:<10} {', '.join(spec.params):<22} {spec.formula}")
    return 0


def _plot(args: argparse.Namespace) -> int:
    policy = policy_from_dict(_policy_dict(args))
    steps = args.steps if args.steps is not None else _default_steps(policy)
    if steps <= 0:
        raise PolicyError(f"--steps: {steps} is not allowed; it must be > 0")
    label = "composite" if isinstance(policy, Composite) else policy.name
    out = Path(args.out or f"schedule-{label}.png")
    lrs = policy.values(range(steps))

    from matplotlib.figure import Figure  # on use: 0.6 s CPU that `--help` and `schedule list` need not pay

    fig = Figure(figsize=(7, 3.5), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(range(steps), lrs, lw=1.5)
    if isinstance(policy, Composite):
        for b in policy.boundaries:
            if b < steps:
                ax.axvline(b, color="grey", ls=":", lw=1)
    ax.set_xlabel("step")
    ax.set_ylabel("learning rate")
    ax.set_title(json.dumps(policy.to_dict()), fontsize=8, wrap=True)
    ax.grid(alpha=0.3)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    print(f"{out}  ({steps} steps, lr min {lrs.min():.4g}, max {lrs.max():.4g})")
    return 0


def _policy_dict(args: argparse.Namespace) -> dict:
    """The policy dict from --config-json, or from --policy and the parameter flags given."""
    flags = {key: getattr(args, key) for key in ("k0", "k1", "gamma", "p", "l") if getattr(args, key) is not None}
    if args.config_json is not None:
        if args.policy or flags:
            raise PolicyError("--config-json: give either --config-json or --policy with flags, not both")
        try:
            return json.loads(args.config_json)
        except json.JSONDecodeError as exc:
            raise PolicyError(f"--config-json: not valid JSON ({exc})") from None
    if not args.policy:
        raise PolicyError("--policy: required (or give --config-json); see `lrservice schedule list`")
    if "l" in flags:
        flags["l"] = _parse_l(flags["l"])
    return {"name": args.policy, **flags}


def _parse_l(text: str):
    """``100`` -> 100, ``2.5`` -> 2.5, ``300,600`` -> [300, 600] (NSTEP boundaries)."""
    try:
        if "," in text:
            return [int(part) for part in text.split(",") if part.strip()]
        value = float(text)
    except ValueError:
        raise PolicyError(f"--l: {text!r} is not allowed; give a number of steps or comma-separated integers") from None
    return int(value) if value.is_integer() else value


def _default_steps(policy) -> int:
    """Enough steps to show the shape: 3 periods, twice the last NSTEP boundary, or 1000;
    for a composite, its last boundary plus its last segment's default."""
    if isinstance(policy, Composite):
        return (policy.boundaries[-1] if policy.boundaries else 0) + _default_steps(policy.segments[-1])
    l = policy.params.get("l")
    if isinstance(l, tuple):
        return max(2 * l[-1], 1000 if l[-1] == 0 else 1)
    if l is not None:
        return max(int(3 * l), 1)
    return 1000
