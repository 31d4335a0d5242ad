"""LRBench-style selection and composition of learning-rate policies.

- :mod:`.metrics`: utility, cost and robustness metrics (pure; no Ray).
- :mod:`.space`: sampled zoo parameters, composites and LR scaling (pure).
- :mod:`.rank`: single-run and verified ranking against FIX (pure).
- :mod:`.trial`: one child run under a policy, and its Tune trainable.
- :mod:`.output`: Parquet schemas, atomic writes, the policy snippet and the table.
- :mod:`.search`: the search (ASHA) / compose / verify stages on Ray Tune.

Submodules are imported on use (the metrics need torch), so ``lrservice.recommend(config)``
refuses a bad config before torch loads. Calling the package,
``lrservice.recommend(config, target_accuracy=None, budget=None)``, runs the recommender
(:func:`lrservice.api.recommend`).
"""

from __future__ import annotations

from lrservice.api import make_command_package

make_command_package(__name__, {  # lrservice.recommend(config, ...) runs the recommender (lrservice.api.recommend)
    name: "metrics" for name in ("cost", "loss_gap", "lr_sensitivity", "sensitivity_key", "utility")})
