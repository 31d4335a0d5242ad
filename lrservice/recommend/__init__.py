"""LRBench-style selection and composition of learning-rate policies.

- :mod:`.metrics`: utility, cost and robustness metrics (pure; no Ray).
- :mod:`.space`: sampled zoo parameters, composites and LR scaling (pure).
- :mod:`.rank`: single-run and verified ranking against FIX (pure).
- :mod:`.trial`: one child run under a policy, and its Tune trainable.
- :mod:`.output`: Parquet schemas, atomic writes, the policy snippet and the table.
- :mod:`.search`: the search (ASHA) / compose / verify stages on Ray Tune.
"""

from lrservice.recommend.metrics import cost, loss_gap, lr_sensitivity, sensitivity_key, utility

__all__ = ["cost", "loss_gap", "lr_sensitivity", "sensitivity_key", "utility"]
