"""runtime: attach order, token-auth settings, and placement decisions (pure and on real Ray)."""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile

import pytest

from lrservice.config import ConfigError, ResourcesConfig, config_from_dict
from lrservice.runtime import (
    CUSTOM_FRACTION,
    Placement,
    add_address_argument,
    auth_status,
    connect,
    default_token_path,
    plan_placement,
    resolve_address,
    with_address,
)

CPU_CLUSTER = {"CPU": 2.0, "memory": 1e9, "object_store_memory": 1e8, "node:127.0.0.1": 1.0}
GPU_CLUSTER = {**CPU_CLUSTER, "GPU": 1.0, "gpu_worker": 1.0, "head": 1.0, "accelerator_type:H100": 1.0}


# --- token auth: the names Ray 2.60's loader reads -------------------------------------

def test_auth_names_match_the_installed_ray():
    """The env var names and default file are Ray's own, not guesses."""
    from ray._private.authentication import authentication_token_setup as setup
    from ray._private.authentication_test_utils import _AUTH_ENV_VARS

    assert setup.AUTH_MODE_ENV_VAR == "RAY_AUTH_MODE"
    assert set(_AUTH_ENV_VARS) == {"RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"}
    home = tempfile.mkdtemp()
    try:
        old = os.environ.get("HOME")
        os.environ["HOME"] = home
        try:
            assert setup._get_default_token_path() == default_token_path()
        finally:
            os.environ["HOME"] = old
    finally:
        shutil.rmtree(home)


def test_auth_status_reads_env_token_then_path_then_default_file(tmp_path):
    assert auth_status({}, home=tmp_path).token_source is None
    assert auth_status({}, home=tmp_path).mode == "unset"

    token_file = default_token_path(tmp_path)
    token_file.parent.mkdir()
    token_file.write_text("abc")
    status = auth_status({"RAY_AUTH_MODE": "token"}, home=tmp_path)
    assert status == auth_status({"RAY_AUTH_MODE": "TOKEN"}, home=tmp_path)
    assert status.mode == "token" and status.token_source == str(token_file) and status.sends_token

    other = tmp_path / "cluster-token"
    other.write_text("xyz\n")
    env = {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(other)}
    assert auth_status(env, home=tmp_path).token_source == str(other)
    other.write_text("")  # an empty token file does not count, even though the default exists
    assert auth_status(env, home=tmp_path).token_source is None
    assert "RAY_AUTH_TOKEN" in auth_status({**env, "RAY_AUTH_TOKEN": "t"}, home=tmp_path).token_source

    disabled = auth_status({"RAY_AUTH_MODE": "disabled"}, home=tmp_path)
    assert not disabled.sends_token and "disabled" in disabled.describe()
    with pytest.raises(ConfigError, match=r"RAY_AUTH_MODE: 'tokens' is not allowed; choose one of: token, disabled"):
        auth_status({"RAY_AUTH_MODE": "tokens"}, home=tmp_path)


# --- attach order ---------------------------------------------------------------------

def test_resolve_address_prefers_config_then_env():
    assert resolve_address(ResourcesConfig(), env={}) is None
    assert resolve_address(ResourcesConfig(), env={"RAY_ADDRESS": "10.0.0.1:6379"}) == "10.0.0.1:6379"
    assert resolve_address(ResourcesConfig(address="h:6379"), env={"RAY_ADDRESS": "10.0.0.1:6379"}) == "h:6379"
    with pytest.raises(ConfigError, match=r"resources.address: 'http://h:8265' is not allowed.*ray job submit"):
        resolve_address(ResourcesConfig(address="http://h:8265"), env={})
    with pytest.raises(ConfigError, match=r"^RAY_ADDRESS: 'https://h:8265'"):
        resolve_address(ResourcesConfig(), env={"RAY_ADDRESS": "https://h:8265"})


def test_address_flag_is_copied_into_resources():
    parser = argparse.ArgumentParser()
    add_address_argument(parser)
    resources = config_from_dict({"resources": {"address": "from-config:6379"}}).resources
    assert with_address(resources, parser.parse_args([]).address).address == "from-config:6379"
    args = parser.parse_args(["--address", "head:6379"])
    assert with_address(resources, args.address).address == "head:6379"


def test_connect_attaches_to_ray_address_instead_of_starting_ray(monkeypatch):
    """A head started here; RAY_ADDRESS set: connect() attaches to it (its custom resource
    is visible, one node only) and resources.address wins over RAY_ADDRESS."""
    import ray
    from ray.cluster_utils import Cluster

    if ray.is_initialized():
        ray.shutdown()
    monkeypatch.setenv("RAY_TMPDIR", tempfile.mkdtemp(prefix="lrs-"))
    cluster = Cluster()
    lines: list[str] = []
    try:
        cluster.add_node(num_cpus=1, resources={"head": 1})
        monkeypatch.setenv("RAY_ADDRESS", cluster.address)
        assert connect(ResourcesConfig(), log=lines.append) == cluster.address
        assert ray.get_runtime_context().gcs_address == cluster.address
        assert ray.cluster_resources().get("head") == 1 and len(ray.nodes()) == 1
        assert lines and lines[0].startswith("[lrservice] attached to Ray cluster at") and "head=1" in lines[0]
        assert connect(ResourcesConfig()) == "existing"  # already initialised: no second init
        ray.shutdown()

        monkeypatch.setenv("RAY_ADDRESS", "127.0.0.1:1")  # would fail if used
        assert connect(ResourcesConfig(address=cluster.address), log=lines.append) == cluster.address
        assert ray.cluster_resources().get("head") == 1
    finally:
        ray.shutdown()
        cluster.shutdown()
        shutil.rmtree(os.environ["RAY_TMPDIR"], ignore_errors=True)


# --- placement ------------------------------------------------------------------------

def test_placement_cpu_only_cluster():
    p = plan_placement(ResourcesConfig(cpus_per_trial=1.0), CPU_CLUSTER)
    assert p == Placement(trial={"cpu": 1.0}, note=p.note)
    assert p.note.startswith("CPU-only: no GPUs requested") and not p.uses_gpu

    asked = plan_placement(ResourcesConfig(gpus_per_trial=0.5, gpus_per_env_runner=0.25), CPU_CLUSTER)
    assert asked.trial == {"cpu": 1.0} and asked.env_runner_gpus == 0 and not asked.uses_gpu
    assert "CPU-only fallback" in asked.note


def test_placement_uses_gpus_when_asked_and_present():
    p = plan_placement(ResourcesConfig(cpus_per_trial=2, gpus_per_trial=0.5, gpus_per_env_runner=0.25), GPU_CLUSTER)
    assert p.trial == {"cpu": 2.0, "gpu": 0.5}
    assert p.env_runner_gpus == 0.25 and p.uses_gpu
    idle = plan_placement(ResourcesConfig(), GPU_CLUSTER)
    assert "gpu" not in idle.trial and "set resources.gpus_per_trial" in idle.note


def test_placement_pins_to_worker_and_head_resources():
    p = plan_placement(ResourcesConfig(worker_resource="gpu_worker", head_resource="head"), GPU_CLUSTER)
    assert p.trial == {"cpu": 1.0, "gpu_worker": CUSTOM_FRACTION}
    assert p.env_runner_custom == {"gpu_worker": CUSTOM_FRACTION}
    assert p.learner_custom == {"head": CUSTOM_FRACTION}
    assert 0 < CUSTOM_FRACTION < 1  # many trials may share one worker's single unit


def test_placement_missing_resource_names_the_field_and_what_is_offered():
    with pytest.raises(ConfigError) as err:
        plan_placement(ResourcesConfig(worker_resource="tpu_worker"), GPU_CLUSTER)
    text = str(err.value)
    assert text.startswith("resources.worker_resource: 'tpu_worker' is not offered")
    assert "allowed: gpu_worker, head or unset" in text and "accelerator_type" not in text
    with pytest.raises(ConfigError, match=r"^resources.head_resource: 'head' .*allowed: none"):
        plan_placement(ResourcesConfig(head_resource="head"), CPU_CLUSTER)
    assert isinstance(err.value, ValueError)  # callers that caught ValueError still do



def test_failed_attach_explains_token_auth_when_the_cause_is_auth():
    from ray.exceptions import AuthenticationError

    from lrservice.runtime import AuthStatus, _attach_hint

    try:
        try:
            raise AuthenticationError("Authentication required: Unauthorized: Missing authentication token")
        except AuthenticationError as inner:
            raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.5:6379") from inner
    except ConnectionError as outer:
        text = _attach_hint("10.0.0.5:6379", AuthStatus("unset", None), outer)
    assert text.startswith("could not attach to Ray at 10.0.0.5:6379: Failed to connect")
    assert "export RAY_AUTH_MODE=token" in text and "RAY_AUTH_MODE unset" in text
    plain = _attach_hint("10.0.0.5:6379", AuthStatus("unset", None), ConnectionError("refused"))
    assert plain == "could not attach to Ray at 10.0.0.5:6379: refused"
