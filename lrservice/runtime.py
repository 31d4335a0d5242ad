"""Ray runtime: attach to a cluster or start a local one, and decide where work is placed.

Attach order: an explicit ``--address`` / ``resources.address``, then ``$RAY_ADDRESS``
(set inside ``ray job submit`` entrypoints), else a local embedded Ray whose dashboard
binds to 127.0.0.1. :func:`plan_placement` is the one place that turns the cluster's
resources into requests for Tune trials, env runners and learners.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Callable

from lrservice.config import ResourcesConfig

CUSTOM_FRACTION = 0.01  # a sliver of a custom resource pins to its nodes without capping how many fit


@dataclass(frozen=True)
class Placement:
    """Resource requests for each kind of Ray work, and a sentence saying why."""

    trial: dict = field(default_factory=dict)           # Tune: tune.with_resources(fn, trial)
    env_runner_cpus: float = 1.0
    env_runner_gpus: float = 0.0
    env_runner_custom: dict = field(default_factory=dict)
    learner_custom: dict = field(default_factory=dict)
    uses_gpu: bool = False
    note: str = ""


def connect(resources: ResourcesConfig | None = None, *, include_dashboard: bool | None = None,
            log: Callable[[str], None] = print) -> str:
    """Attach to the configured cluster or start a local Ray; returns where it connected.

    A no-op when Ray is already initialised in this process (e.g. inside tests or jobs).
    """
    import ray

    resources = resources or ResourcesConfig()
    if ray.is_initialized():
        return "existing"
    address = resources.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=True)
        log(f"[lrservice] attached to Ray cluster at {address}: {_summary(ray.cluster_resources())}")
        return address
    if include_dashboard is None:
        include_dashboard = os.environ.get("LRSERVICE_DASHBOARD", "1") != "0"
    ctx = ray.init(num_cpus=resources.num_cpus, include_dashboard=include_dashboard,
                   dashboard_host="127.0.0.1", log_to_driver=True)
    url = getattr(ctx, "dashboard_url", None)
    where = f"dashboard http://{url}" if url else "no dashboard"
    log(f"[lrservice] started local Ray ({_summary(ray.cluster_resources())}; {where})")
    return "local"


def _summary(res: dict) -> str:
    parts = [f"{int(res.get('CPU', 0))} CPU", f"{res.get('GPU', 0):g} GPU"]
    custom = sorted(k for k in res if k not in ("CPU", "GPU", "memory", "object_store_memory")
                    and not k.startswith("node:") and not k.startswith("accelerator_type"))
    if custom:
        parts.append("custom: " + ", ".join(f"{k}={res[k]:g}" for k in custom))
    return ", ".join(parts)


def plan_placement(resources: ResourcesConfig, cluster: dict | None = None) -> Placement:
    """Decide requests from the config and what the cluster offers.

    Priority: a configured worker resource that the cluster advertises (runners and
    trials go to nodes carrying it); else GPUs when asked for and present; else CPU
    only, stated in ``note``. Learners go to the head resource when configured.
    """
    if cluster is None:
        import ray

        cluster = ray.cluster_resources()
    has_gpu = cluster.get("GPU", 0) > 0
    trial: dict = {"cpu": resources.cpus_per_trial}
    runner_custom: dict = {}
    learner_custom: dict = {}
    notes = []
    if resources.worker_resource:
        if cluster.get(resources.worker_resource, 0) <= 0:
            raise ValueError(
                f"resources.worker_resource: {resources.worker_resource!r} is not offered by any node of this "
                f"cluster (it offers: {_summary(cluster)}); start workers with --resources "
                f"'{{\"{resources.worker_resource}\": 1}}' or unset it"
            )
        trial[resources.worker_resource] = CUSTOM_FRACTION
        runner_custom[resources.worker_resource] = CUSTOM_FRACTION
        notes.append(f"trials and env runners pinned to nodes with '{resources.worker_resource}'")
    if resources.head_resource:
        if cluster.get(resources.head_resource, 0) <= 0:
            raise ValueError(
                f"resources.head_resource: {resources.head_resource!r} is not offered by any node of this cluster "
                f"(it offers: {_summary(cluster)})"
            )
        learner_custom[resources.head_resource] = CUSTOM_FRACTION
        notes.append(f"learners pinned to the node with '{resources.head_resource}'")
    wants_gpu = resources.gpus_per_trial > 0 or resources.gpus_per_env_runner > 0
    runner_gpus = 0.0
    if wants_gpu and has_gpu:
        if resources.gpus_per_trial > 0:
            trial["gpu"] = resources.gpus_per_trial
        runner_gpus = resources.gpus_per_env_runner
        notes.append(f"GPU: {resources.gpus_per_trial:g} per trial, {runner_gpus:g} per env runner")
    elif wants_gpu:
        notes.append("CPU-only fallback: GPUs were requested but the cluster has none")
    else:
        notes.append("CPU-only: no GPUs requested" + (" (cluster has GPUs; set resources.gpus_per_trial to use them)" if has_gpu else ""))
    return Placement(trial=trial, env_runner_cpus=1.0, env_runner_gpus=runner_gpus,
                     env_runner_custom=runner_custom, learner_custom=learner_custom,
                     uses_gpu=bool(wants_gpu and has_gpu), note="; ".join(notes))
