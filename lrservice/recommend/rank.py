"""Ranking candidates: single search runs, and verified candidates over seeds against FIX.

Pure functions over plain dicts (one dict per child run, as in ``runs.parquet``).

Verified ranking (LRBench's "reach the target accuracy within the budget, fastest"):
candidates that reach the target on every verify seed come first, ordered by fewest mean
steps-to-target, then by higher mean final validation accuracy. The rest follow, ordered
by how many seeds reached the target, then the mean steps of those that did, then final
accuracy.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence

from lrservice.recommend.metrics import lr_sensitivity


def _num(value) -> float | None:
    if value is None:
        return None
    value = float(value)
    return None if math.isnan(value) else value


def search_key(run: Mapping) -> tuple:
    """Order of one search run: reached the target, fewer steps to it, then higher accuracy.

    Accuracy is the final validation accuracy when the run finished its budget, else the
    best validation accuracy it reported before ASHA stopped it (finished runs first).
    """
    steps = _num(run.get("steps_to_target"))
    final = _num(run.get("final_val_accuracy"))
    acc = final if final is not None else (_num(run.get("best_val_accuracy")) or 0.0)
    return (steps is None, steps if steps is not None else math.inf, final is None, -acc)


def _mean_std(values: Sequence[float]) -> tuple[float | None, float | None]:
    """Mean and sample std (ddof 1; 0.0 for a single value) or ``(None, None)`` when empty."""
    if not values:
        return None, None
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def summarise(candidate: str, runs: Iterable[Mapping], seeds: Sequence[int], scales: Sequence[float]) -> dict:
    """One verified candidate from its runs: target reached, steps/accuracy mean ± std, robustness.

    ``runs`` are the candidate's verify runs: ``scale == 1`` on every seed in ``seeds``, and
    one run per factor in ``scales`` on ``seeds[0]``. Steps-to-target statistics use only the
    seeds that reached the target (``seeds_reached`` says how many). Sensitivity compares
    each scaled run's final validation accuracy with the unscaled run on ``seeds[0]``.
    """
    runs = list(runs)
    base = {int(r["seed"]): r for r in runs if float(r["scale"]) == 1.0}
    missing = [s for s in seeds if s not in base]
    if missing:
        raise ValueError(f"summarise: candidate {candidate!r} has no unscaled run for seed(s) {missing}")
    unscaled = [base[s] for s in seeds]
    steps = [_num(r["steps_to_target"]) for r in unscaled]
    reached = [s for s in steps if s is not None]
    seconds = [_num(r.get("seconds_to_target")) for r in unscaled]
    final = [_num(r["final_val_accuracy"]) or 0.0 for r in unscaled]
    test = [_num(r.get("test_accuracy")) for r in unscaled]
    gaps = [_num(r.get("train_test_loss_gap")) for r in unscaled]
    steps_mean, steps_std = _mean_std(reached)
    final_mean, final_std = _mean_std(final)
    test_mean, test_std = _mean_std([t for t in test if t is not None])
    gap_mean, _ = _mean_std([g for g in gaps if g is not None])
    secs_mean, _ = _mean_std([s for s in seconds if s is not None])
    scaled = {float(r["scale"]): _num(r["final_val_accuracy"]) or 0.0
              for r in runs if int(r["seed"]) == seeds[0] and float(r["scale"]) != 1.0}
    absent = [s for s in scales if float(s) not in scaled]
    if absent:
        raise ValueError(f"summarise: candidate {candidate!r} has no run for LR scale(s) {absent}")
    first = unscaled[0]
    return {
        "candidate": candidate,
        "policy": first["policy"],
        "label": first.get("label", candidate),
        "reaches_all": len(reached) == len(seeds),
        "seeds_reached": len(reached),
        "num_seeds": len(seeds),
        "steps_to_target_mean": steps_mean,
        "steps_to_target_std": steps_std,
        "seconds_to_target_mean": secs_mean if len(reached) == len(seeds) else None,
        "final_val_accuracy_mean": final_mean,
        "final_val_accuracy_std": final_std,
        "test_accuracy_mean": test_mean,
        "test_accuracy_std": test_std,
        "train_test_loss_gap_mean": gap_mean,
        **lr_sensitivity(_num(first["final_val_accuracy"]) or 0.0, {s: scaled[float(s)] for s in scales}),
    }


def verified_key(summary: Mapping) -> tuple:
    """The ranking order of the module docstring, as a sort key (smaller is better)."""
    steps = summary["steps_to_target_mean"]
    return (not summary["reaches_all"], -summary["seeds_reached"],
            steps if steps is not None else math.inf, -(summary["final_val_accuracy_mean"] or 0.0))


def rank(summaries: Iterable[Mapping]) -> list[dict]:
    """Summaries sorted best first, each with its 1-based ``rank``."""
    ordered = sorted((dict(s) for s in summaries), key=verified_key)
    for i, s in enumerate(ordered, 1):
        s["rank"] = i
    return ordered


def speedup(reference: Mapping, best: Mapping) -> float | None:
    """FIX's mean steps-to-target over the candidate's, when both reach the target on every seed."""
    if not (reference["reaches_all"] and best["reaches_all"]):
        return None
    return reference["steps_to_target_mean"] / best["steps_to_target_mean"]


def verdict(reference: Mapping, best: Mapping, target: float) -> str:
    """One plain sentence: did the recommendation beat FIX at the base LR, and by how much."""
    label = best["label"]
    if best["candidate"] == reference["candidate"]:
        if reference["reaches_all"]:
            return (f"Nothing beat FIX at the base LR: it reaches {target:g} in "
                    f"{reference['steps_to_target_mean']:.0f} steps on average and ranks first.")
        return f"Nothing reached the target accuracy {target:g} on every verify seed; FIX at the base LR ranks first."
    if not best["reaches_all"]:
        return (f"No candidate reached the target accuracy {target:g} on every verify seed; the best, {label}, "
                f"reached it on {best['seeds_reached']}/{best['num_seeds']} seeds (FIX: {reference['seeds_reached']}).")
    ratio = speedup(reference, best)
    if ratio is None:
        return (f"{label} reaches {target:g} on every verify seed in {best['steps_to_target_mean']:.0f} steps "
                f"on average; FIX at the base LR does not reach it on every seed "
                f"({reference['seeds_reached']}/{reference['num_seeds']}).")
    if ratio <= 1.0:
        return (f"Nothing beat FIX at the base LR on steps-to-target: "
                f"FIX needs {reference['steps_to_target_mean']:.0f} steps; "
                f"{label} ranks first on final accuracy with {best['steps_to_target_mean']:.0f} steps.")
    return (f"{label} reaches {target:g} in {best['steps_to_target_mean']:.0f} steps on average vs "
            f"{reference['steps_to_target_mean']:.0f} for FIX at the base LR: {ratio:.2f}x faster.")
