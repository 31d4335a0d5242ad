"""Ray runtime: attach to a cluster or start a local one, and decide where work is placed.

Attach order: an explicit ``--address`` / ``resources.address``, then ``$RAY_ADDRESS``
(set inside ``ray job submit`` entrypoints), else a local embedded Ray whose dashboard
binds to 127.0.0.1. :func:`plan_placement` is the one place that turns the cluster's
resources into requests for Tune trials, env runners and learners.

Token auth (Ray 2.60): a cluster started with ``RAY_AUTH_MODE=token`` (or, with the mode
unset, one whose head finds a token) refuses clients without its token. Clients find the
token in ``$RAY_AUTH_TOKEN``, else the file ``$RAY_AUTH_TOKEN_PATH``, else
``~/.ray/auth_token``; a client attaching to an explicit address must set
``RAY_AUTH_MODE=token`` itself (Ray never sends a token to an address it was merely
given). :func:`auth_status` reports which of these apply.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Mapping

from lrservice.config import ConfigError, ResourcesConfig

CUSTOM_FRACTION = 0.01  # a sliver of a custom resource pins to its nodes without capping how many fit
AUTH_MODE_ENV = "RAY_AUTH_MODE"
AUTH_TOKEN_ENV = "RAY_AUTH_TOKEN"
AUTH_TOKEN_PATH_ENV = "RAY_AUTH_TOKEN_PATH"
AUTH_MODES = ("token", "disabled")
_NON_CUSTOM = ("CPU", "GPU", "memory", "object_store_memory")


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


@dataclass(frozen=True)
class AuthStatus:
    """What a Ray client in this environment would do about token auth.

    ``mode`` is ``RAY_AUTH_MODE`` (``"unset"`` when absent); ``token_source`` names where
    a token would be read from (the variable or the file path), or None.
    """

    mode: str
    token_source: str | None

    @property
    def sends_token(self) -> bool:
        return self.mode == "token" and self.token_source is not None

    def describe(self) -> str:
        if self.mode == "disabled":
            return "token auth disabled (RAY_AUTH_MODE=disabled)"
        if self.mode == "token":
            where = self.token_source or "nowhere: set RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH or write ~/.ray/auth_token"
            return f"token auth on (RAY_AUTH_MODE=token), token from {where}"
        found = f"; a token exists at {self.token_source}" if self.token_source else ""
        return f"RAY_AUTH_MODE unset{found}"


def default_token_path(home: str | os.PathLike | None = None) -> Path:
    """Ray's default token file, ``~/.ray/auth_token``."""
    return Path(home if home is not None else Path.home()) / ".ray" / "auth_token"


def auth_status(env: Mapping[str, str] | None = None, home: str | os.PathLike | None = None) -> AuthStatus:
    """Token-auth settings as Ray 2.60's loader reads them: env token, then token file, then default file."""
    env = os.environ if env is None else env
    mode = env.get(AUTH_MODE_ENV, "").strip().lower() or "unset"
    if mode not in AUTH_MODES + ("unset",):
        raise ConfigError(f"{AUTH_MODE_ENV}: {env[AUTH_MODE_ENV]!r} is not allowed; "
                          f"choose one of: {', '.join(AUTH_MODES)}")
    source = None
    if env.get(AUTH_TOKEN_ENV, "").strip():
        source = AUTH_TOKEN_ENV
    elif env.get(AUTH_TOKEN_PATH_ENV):
        path = Path(os.path.expanduser(env[AUTH_TOKEN_PATH_ENV]))
        source = str(path) if path.is_file() and path.read_text().strip() else None
    else:
        path = default_token_path(home)
        source = str(path) if path.is_file() and path.read_text().strip() else None
    return AuthStatus(mode=mode, token_source=source)


def resolve_address(resources: ResourcesConfig | None = None, env: Mapping[str, str] | None = None) -> str | None:
    """The cluster to attach to: ``resources.address`` (set from ``--address``), else ``$RAY_ADDRESS``, else None.

    An ``http(s)://`` address is the dashboard's job API, not a place a driver can attach.
    """
    env = os.environ if env is None else env
    address = (resources.address if resources else None) or env.get("RAY_ADDRESS") or None
    if address and address.startswith(("http://", "https://")):
        field_name = "resources.address" if resources and resources.address else "RAY_ADDRESS"
        raise ConfigError(
            f"{field_name}: {address!r} is not allowed; that is the dashboard (job submission) address. "
            "Give the GCS address HOST:6379 (or 'auto', or ray://HOST:10001), or use "
            f"`ray job submit --address {address} -- lrservice ...`"
        )
    return address


def add_address_argument(parser) -> None:
    """Add ``--address`` to a command's argparse parser (the CLI copies it into ``resources.address``)."""
    parser.add_argument(
        "--address", default=None,
        help="Ray cluster to attach to (HOST:6379, 'auto' or ray://HOST:10001); default: $RAY_ADDRESS, "
             "else a local Ray with its dashboard on 127.0.0.1",
    )


def with_address(resources: ResourcesConfig, address: str | None) -> ResourcesConfig:
    """``resources`` with ``address`` set when one was given on the command line."""
    return dataclasses.replace(resources, address=address) if address else resources


def connect(resources: ResourcesConfig | None = None, *, include_dashboard: bool | None = None,
            log: Callable[[str], None] = print) -> str:
    """Attach to the configured cluster or start a local Ray; returns where it connected.

    Returns ``"existing"`` when Ray is already initialised in this process (tests, jobs),
    the address when it attached, or ``"local"`` when it started an embedded instance.
    """
    import ray  # on use: the CLI imports this module to build its parser, and `--help` need not pay for Ray

    resources = resources or ResourcesConfig()
    if ray.is_initialized():
        return "existing"
    address = resolve_address(resources)
    auth = auth_status()
    if address:
        try:
            ray.init(address=address, log_to_driver=True)
        except Exception as exc:  # ray raises ConnectionError, AuthenticationError, RuntimeError...
            raise ConnectionError(_attach_hint(address, auth, exc)) from exc
        log(f"[lrservice] attached to Ray cluster at {address}: {_summary(ray.cluster_resources())} "
            f"({auth.describe()})")
        return address
    if include_dashboard is None:
        include_dashboard = os.environ.get("LRSERVICE_DASHBOARD", "1") != "0"
    ctx = ray.init(num_cpus=resources.num_cpus, include_dashboard=include_dashboard,
                   dashboard_host="127.0.0.1", log_to_driver=True)
    url = getattr(ctx, "dashboard_url", None)
    where = f"dashboard http://{url}" if url else "no dashboard"
    auth = auth_status()
    if auth.mode == "token":
        where += "; token auth on: `ray get-auth-token` prints the token the dashboard asks for"
    log(f"[lrservice] started local Ray ({_summary(ray.cluster_resources())}; {where})")
    return "local"


def _attach_hint(address: str, auth: AuthStatus, exc: BaseException) -> str:
    """The error for a failed attach; says what to set when any cause in the chain is about auth."""
    text = f"could not attach to Ray at {address}: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
    chain, seen = [], set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        chain.append(exc)
        exc = exc.__cause__ or exc.__context__
    if any(type(e).__name__ == "AuthenticationError" or "authentication" in str(e).lower() for e in chain):
        text += (f" -- the cluster wants its token ({auth.describe()}): export {AUTH_MODE_ENV}=token and put the "
                 f"head's token in ${AUTH_TOKEN_ENV}, the file ${AUTH_TOKEN_PATH_ENV}, or ~/.ray/auth_token")
    return text


def _custom(res: Mapping[str, float]) -> list[str]:
    return sorted(k for k in res if k not in _NON_CUSTOM
                  and not k.startswith("node:") and not k.startswith("accelerator_type"))


def _summary(res: Mapping[str, float]) -> str:
    parts = [f"{int(res.get('CPU', 0))} CPU", f"{res.get('GPU', 0):g} GPU"]
    custom = _custom(res)
    if custom:
        parts.append("custom: " + ", ".join(f"{k}={res[k]:g}" for k in custom))
    return ", ".join(parts)


def _require_resource(field_name: str, name: str, cluster: Mapping[str, float]) -> None:
    if cluster.get(name, 0) <= 0:
        offered = _custom(cluster)
        raise ConfigError(
            f"{field_name}: {name!r} is not offered by any node of this cluster; allowed: "
            f"{', '.join(offered) if offered else 'none (no custom resources)'} or unset "
            f"(cluster: {_summary(cluster)}). Start nodes with --resources '{{\"{name}\": 1}}'"
        )


def plan_placement(resources: ResourcesConfig, cluster: Mapping[str, float] | None = None) -> Placement:
    """Decide requests from the config and what the cluster offers.

    Priority: a configured worker resource that the cluster advertises (runners and
    trials go to nodes carrying it); GPUs when asked for and present; else CPU only,
    stated in ``note``. Learners go to the head resource when configured. A configured
    resource the cluster lacks raises :class:`ConfigError` naming the field.
    """
    if cluster is None:
        import ray  # on use, as in connect()

        cluster = ray.cluster_resources()
    has_gpu = cluster.get("GPU", 0) > 0
    trial: dict = {"cpu": resources.cpus_per_trial}
    runner_custom: dict = {}
    learner_custom: dict = {}
    notes = []
    if resources.worker_resource:
        _require_resource("resources.worker_resource", resources.worker_resource, cluster)
        trial[resources.worker_resource] = CUSTOM_FRACTION
        runner_custom[resources.worker_resource] = CUSTOM_FRACTION
        notes.append(f"trials and env runners pinned to nodes with '{resources.worker_resource}'")
    if resources.head_resource:
        _require_resource("resources.head_resource", resources.head_resource, cluster)
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
        hint = " (cluster has GPUs; set resources.gpus_per_trial to use them)" if has_gpu else ""
        notes.append("CPU-only: no GPUs requested" + hint)
    return Placement(trial=trial, env_runner_cpus=1.0, env_runner_gpus=runner_gpus,
                     env_runner_custom=runner_custom, learner_custom=learner_custom,
                     uses_gpu=bool(wants_gpu and has_gpu), note="; ".join(notes))
