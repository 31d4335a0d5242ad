"""Zero-shot evidence for a controller on task families it never trained on (issue 23).

    python experiments/zero_shot.py --controller general=pretrained:general \\
        --controller digits=pretrained:digits-mlp --seeds 1000-1039 --out results/zero-shot

For each family config (default: the four families held out of ``pretrained:general``'s suite),
one ``evaluate-controller`` (the evidence protocol: every rival tuned on the tune seeds, then
every controller from every initial LR on the held-out seeds, paired per seed) into
``OUT/<family>/``; then ``OUT/zero_shot.md``: per family, controller and initial LR, the paired
Δ final validation loss against tuned constant, tuned cosine and the best tuned rival with 95%
CIs and verdicts, and Δ test accuracy against cosine. A family already evaluated (its
``summary.parquet`` exists) is read back, not rerun.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pandas as pd

FAMILIES = {  # name -> config: none of these is in configs/general-controller.yaml's suite
    "mnist1d-conv": "examples/own_task/mnist1d-conv.yaml",  # a conv net on MNIST-1D (the example's plugin model)
    "digits-lenet5": "configs/digits-lenet5.yaml",  # a 2-D conv net on digits
    "tabular-mlp": "configs/tabular-mlp.yaml",  # a tabular task
    "signals-conv": "examples/own_task/config.yaml",  # the examples' plugin task (model and data)
}


def _ci(row: pd.Series, ref: str) -> str:
    key = f"dval_vs_{ref}"
    return (f"{row[key]:+.4f} [{row[key + '_low']:+.4f}, {row[key + '_high']:+.4f}] "
            f"{row['verdict_vs_' + ref]}")


def table(summaries: dict[str, pd.DataFrame], controllers: list[str]) -> str:
    """One Markdown table over every family: each controller's rows, Δ against the three references."""
    lines = ["| family | controller | from | final val loss | Δ vs tuned constant | Δ vs tuned cosine "
             "| Δ vs best tuned rival | Δ test acc vs cosine (points) |", "|---|---|---|---|---|---|---|---|"]
    for family, summary in summaries.items():
        best = summary["best_rival"].iloc[0]
        for name in controllers:
            for _, row in summary[summary.arm == name].sort_values("initial_lr", ascending=False).iterrows():
                lines.append(f"| {family} | {name} | {row['initial_lr']:.0e} | {row['val_loss_mean']:.4f} "
                             f"| {_ci(row, 'constant')} | {_ci(row, 'cosine')} | {_ci(row, 'best')} ({best}) "
                             f"| {100 * row['dacc_vs_cosine']:+.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--controller", action="append", required=True, help="NAME=pretrained:NAME or a path")
    parser.add_argument("--seeds", default="1000-1039", help="held-out seeds, FIRST-LAST")
    parser.add_argument("--family", action="append", choices=sorted(FAMILIES), help="default: all four")
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    import lrservice

    first, last = (int(s) for s in args.seeds.split("-"))
    out = Path(args.out)
    names = [spec.partition("=")[0] for spec in args.controller]
    summaries = {}
    for family in args.family or list(FAMILIES):
        target = out / family
        if not (target / "summary.parquet").exists():
            started = time.perf_counter()
            lrservice.evaluate_controller(FAMILIES[family], args.controller, seeds=range(first, last + 1),
                                          output_dir=target, log=lambda line: None)
            print(f"{family}: evaluated in {time.perf_counter() - started:.0f} s -> {target}", flush=True)
        summaries[family] = pd.read_parquet(target / "summary.parquet")
    text = f"Held-out seeds {first}-{last}; Δ = controller - reference, paired per seed, 95% bootstrap CI.\n\n"
    (out / "zero_shot.md").write_text(text + table(summaries, names))
    print((out / "zero_shot.md").read_text())
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
