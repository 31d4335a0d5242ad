"""Controller checkpoints: the training layout, and the compact export that needs no RLlib.

Training output directory (``train-controller --output``)::

    checkpoints/iter_000005/      algo.save_to_path(...) plus controller.json (task and
                                  controller sections, iteration, env and child steps)
    LATEST                        the name of the newest complete checkpoint
    last.pt                       the newest checkpoint exported (see below)
    controller.pt                 the deployable controller: the selection pick exported (with
                                  controller.selection_seeds), else the same as last.pt
    selection.parquet             one row per scored checkpoint and initial LR (control/selection.py)
    selection.json                tuned cosine on the selection seeds (cached), the pick, its cost
    training_log.parquet          one row per PPO iteration

An output directory, named as a controller, means its ``controller.pt``.

The export (:func:`export_controller`) is one small file loadable with
``torch.load(weights_only=True)``: the actor network's layers, the frozen observation
normaliser (RLlib's MeanStdFilter statistics when the checkpoint was written), the feature
set, the action semantics and what training cost; the pick also carries what selecting it
cost (``selection``). :class:`~lrservice.control.controller.LearnedController` runs from it
without Ray. An ensemble of runs (``controller.across_runs: ensemble``) is the same file at version
2: instead of one ``normaliser`` and ``policy`` it holds ``members``, one per run, each with its own
(:func:`ensemble_payload`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch

from lrservice.config import ConfigError, ControllerConfig, RunConfig, TaskConfig, stored_sections
from lrservice.control.actions import feature_names
from lrservice.control.selection import SELECTION_RECORD
from lrservice.files import write_atomic, write_text

CHECKPOINTS = "checkpoints"
LATEST = "LATEST"
META_FILE = "controller.json"
EXPORT_FILE = "controller.pt"
LAST_FILE = "last.pt"
MODULE_PATH = ("learner_group", "learner", "rl_module", "default_policy")
FILTER_PATH = ("env_runner", "env_to_module_connector")
EXPORT_FORMAT = "lrservice-controller"
EXPORT_VERSION = 1  # one actor: top-level ``normaliser`` and ``policy``
ENSEMBLE_VERSION = 2  # several actors (``members``, each with its own normaliser and policy), acting together
# the controller fields that say what an observation holds and what an action does to the LR: ensemble members
# must share them, and so must a resumed run (which also keeps its reward and network, training.py)
ACTION_FIELDS = ("features", "action_space", "action_every", "factor", "factors", "levels", "lr_min", "lr_max",
                 "envelope", "envelope_warmup")


def checkpoint_name(iteration: int) -> str:
    return f"iter_{iteration:06d}"


def latest_checkpoint(output_dir: str | os.PathLike) -> Path | None:
    """The newest complete checkpoint under ``output_dir`` (via ``LATEST``), or None."""
    out = Path(output_dir)
    marker = out / LATEST
    if marker.is_file():
        path = out / CHECKPOINTS / marker.read_text().strip()
        if (path / META_FILE).is_file():
            return path
    done = kept_checkpoints(out)
    return done[-1] if done else None


def kept_checkpoints(output_dir: str | os.PathLike) -> list[Path]:
    """Every complete checkpoint under ``output_dir`` (``controller.json`` written), oldest first."""
    return sorted(p for p in (Path(output_dir) / CHECKPOINTS).glob("iter_*") if (p / META_FILE).is_file())


def checkpoint_iteration(checkpoint: Path) -> int:
    """The PPO iteration a checkpoint directory holds (its name, ``iter_N``)."""
    return int(checkpoint.name.removeprefix("iter_"))


def read_metadata(checkpoint: str | os.PathLike) -> dict:
    """``controller.json`` of a checkpoint: iteration, env steps, task and controller sections."""
    path = Path(checkpoint) / META_FILE
    if not path.is_file():
        raise FileNotFoundError(f"{checkpoint}: not a controller checkpoint (no {META_FILE}); "
                                "give a directory written by `lrservice train-controller`")
    return json.loads(path.read_text())


def save_checkpoint(algo, config: RunConfig, output_dir: Path, iteration: int, env_steps: float,
                    child_steps: float = 0.0, episodes: float = 0.0) -> Path:
    """``algo.save_to_path`` into ``checkpoints/iter_N`` plus ``controller.json``; then point ``LATEST`` at it."""
    path = Path(output_dir) / CHECKPOINTS / checkpoint_name(iteration)
    algo.save_to_path(str(path))
    plain = config.to_dict()
    meta = {"iteration": iteration, "env_steps": env_steps, "child_steps": child_steps, "episodes": episodes,
            "task": plain["task"], "controller": plain["controller"]}
    write_text(path / META_FILE, json.dumps(meta, indent=2))
    write_text(Path(output_dir) / LATEST, path.name)
    return path


PRETRAINED_PREFIX = "pretrained:"
PRETRAINED_DIR = Path(__file__).resolve().parent.parent / "controllers"


def pretrained_controllers() -> dict[str, Path]:
    """The controllers shipped inside the package (``pretrained:NAME``), by name."""
    return {p.stem: p for p in sorted(PRETRAINED_DIR.glob("*.pt"))}


def resolve_checkpoint(path: str | os.PathLike) -> Path:
    """``pretrained:NAME``, an exported file, a checkpoint directory, or an output directory: its
    ``controller.pt`` (the pick), else (written before exports) its newest checkpoint."""
    text = str(path)
    if text.startswith(PRETRAINED_PREFIX):
        name = text[len(PRETRAINED_PREFIX):]
        shipped = pretrained_controllers()
        if name not in shipped:
            raise FileNotFoundError(f"{text}: no such pretrained controller; shipped: "
                                    + ", ".join(PRETRAINED_PREFIX + n for n in shipped))
        return shipped[name]
    p = Path(os.path.expanduser(text)).resolve()
    if p.is_file():
        return p
    if (p / META_FILE).is_file() and p.joinpath(*MODULE_PATH).is_dir():
        return p
    if (p / EXPORT_FILE).is_file() and ((p / CHECKPOINTS).is_dir() or (p / SELECTION_RECORD).is_file()):
        return p / EXPORT_FILE  # a run's pick, or (selection.json, no checkpoints) the pick across several runs
    latest = latest_checkpoint(p) if p.is_dir() else None
    if latest is None:
        raise FileNotFoundError(f"{path}: no controller checkpoint there; give an exported controller file "
                                "(controller.pt), a checkpoint directory (checkpoints/iter_N) or an output "
                                "directory written by `lrservice train-controller`")
    return latest


def observation_stats(checkpoint: Path) -> dict[str, Any]:
    """The MeanStdFilter statistics the env runners had when the checkpoint was written.

    ``normalise(x) = clip((x - mean) / (std + eps), -clip, clip)`` as RLlib's filter does;
    identity when the checkpoint has no filter.
    """
    from ray.rllib.connectors.env_to_module import EnvToModulePipeline, MeanStdFilter
    from ray.rllib.utils.filter import SMALL_NUMBER, RunningStat

    identity = {"mean": None, "std": None, "clip": None, "eps": 0.0, "count": 0}
    where = checkpoint.joinpath(*FILTER_PATH)
    if not where.is_dir():
        return identity
    pipeline = EnvToModulePipeline.from_checkpoint(str(where))
    filt = next((c for c in pipeline.connectors if isinstance(c, MeanStdFilter)), None)
    if filt is None:
        return identity
    state = filt.get_state()[None]
    stat = RunningStat.from_state(state["running_stats"][0])
    return {"mean": np.asarray(stat.mean, np.float64) if state["de_mean_to_zero"] else None,
            "std": np.asarray(stat.std, np.float64) if state["de_std_to_one"] else None,
            "clip": None if state["clip_by_value"] is None else float(state["clip_by_value"]),
            "eps": float(SMALL_NUMBER) if state["de_std_to_one"] else 0.0, "count": int(stat.n)}


def actor_layers(module) -> list[torch.nn.Linear]:
    """The RLModule's policy path as its Linear layers in order: actor encoder, then pi head."""
    encoder = getattr(module.encoder, "actor_encoder", module.encoder)
    layers = [m for m in encoder.modules() if isinstance(m, torch.nn.Linear)]
    layers += [m for m in module.pi.modules() if isinstance(m, torch.nn.Linear)]
    return layers


def export_payload(ckpt: Path, extra: Mapping[str, Any] | None = None,
                   selection: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The compact controller of the RLlib checkpoint directory ``ckpt`` as plain tensors and numbers;
    ``extra`` joins its ``training`` record, ``selection`` (how it was picked, at what cost) is its own section."""
    from ray.rllib.core.rl_module.rl_module import RLModule

    meta = read_metadata(ckpt)
    module = RLModule.from_checkpoint(str(ckpt.joinpath(*MODULE_PATH)))
    activation = module.model_config.get("fcnet_activation", "tanh") if isinstance(module.model_config, dict) \
        else getattr(module.model_config, "fcnet_activation", "tanh")
    stats = observation_stats(ckpt)
    features = feature_names(stored_sections({"controller": meta["controller"]}).controller)
    n = len(features)
    payload = {
        "format": EXPORT_FORMAT, "version": EXPORT_VERSION,
        "task": meta["task"], "controller": meta["controller"],
        "features": list(features),
        "normaliser": {
            "mean": torch.as_tensor(stats["mean"] if stats["mean"] is not None else np.zeros(n), dtype=torch.float64),
            "std": torch.as_tensor(stats["std"] if stats["std"] is not None else np.ones(n), dtype=torch.float64),
            "clip": stats["clip"], "eps": stats["eps"], "count": stats["count"]},
        "policy": {"activation": activation,
                   "layers": [{"weight": l.weight.detach().cpu().clone(), "bias": l.bias.detach().cpu().clone()}
                              for l in actor_layers(module)]},
        "training": {"iteration": meta["iteration"], "env_steps": meta.get("env_steps", 0.0),
                     "child_steps": meta.get("child_steps", 0.0), "episodes": meta.get("episodes", 0.0),
                     "checkpoint": ckpt.name, **dict(extra or {})},
    }
    if selection is not None:
        payload["selection"] = dict(selection)
    return payload


def export_controller(checkpoint: str | os.PathLike, out: str | os.PathLike | None = None,
                      extra: Mapping[str, Any] | None = None, selection: Mapping[str, Any] | None = None) -> Path:
    """Write the compact controller of an RLlib checkpoint, or of an output directory's newest one
    (default target: ``<output dir>/controller.pt``)."""
    given = Path(os.path.expanduser(str(checkpoint)))
    ckpt = latest_checkpoint(given) if (given / CHECKPOINTS).is_dir() else None
    ckpt = ckpt or resolve_checkpoint(checkpoint)
    if ckpt.is_file():
        raise ConfigError(f"{checkpoint}: already an exported controller")
    payload = export_payload(ckpt, extra, selection)
    target = Path(out) if out is not None else ckpt.parent.parent / EXPORT_FILE
    return write_atomic(target, lambda tmp: torch.save(payload, tmp))


def ensemble_payload(payloads: list[Mapping[str, Any]], selection: Mapping[str, Any]) -> dict[str, Any]:
    """One export acting as all of ``payloads`` together (runs of one recipe; same features and actions).

    Each member keeps its own normaliser, policy, training record and selection; ``training`` sums
    what the members cost (``iteration`` is the longest member's), ``selection`` says how they were
    chosen. :class:`~lrservice.control.controller.LearnedController` acts on the members' mean action
    probabilities.
    """
    if len(payloads) < 2:
        raise ValueError("ensemble_payload: an ensemble needs at least two members")
    first = payloads[0]
    for p in payloads[1:]:
        if _actions(p) != _actions(first):  # the feature names follow from the features and the envelope
            raise ValueError("ensemble_payload: the members differ in features or actions; only runs of one "
                             "recipe act together")
    summed = {key: float(sum(float(p["training"].get(key) or 0.0) for p in payloads))
              for key in ("env_steps", "child_steps", "episodes")}
    return {
        "format": EXPORT_FORMAT, "version": ENSEMBLE_VERSION,
        "task": first["task"], "controller": first["controller"], "features": list(first["features"]),
        "members": [{key: p[key] for key in ("normaliser", "policy", "training", "task", "selection") if key in p}
                    for p in payloads],
        "training": {"iteration": max(int(p["training"]["iteration"]) for p in payloads), **summed,
                     "members": len(payloads)},
        "selection": dict(selection),
    }


def _actions(payload: Mapping[str, Any]) -> dict:
    """What an export's actions mean: the controller section without what only training uses."""
    _, controller = export_sections(payload)
    return {name: getattr(controller, name) for name in ACTION_FIELDS}


def load_export(path: str | os.PathLike) -> dict[str, Any]:
    """An exported controller, checked: format, version and sections (one-line errors)."""
    p = Path(path)
    try:
        payload = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # a truncated or foreign file: say which and why, in one line
        raise ConfigError(f"{p}: not an exported lrservice controller ({exc.__class__.__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != EXPORT_FORMAT:
        raise ConfigError(f"{p}: not an exported lrservice controller (format is not {EXPORT_FORMAT!r})")
    if payload.get("version") not in (EXPORT_VERSION, ENSEMBLE_VERSION):
        raise ConfigError(f"{p}: controller export version {payload.get('version')!r} is not supported "
                          f"(this lrservice reads versions {EXPORT_VERSION} and {ENSEMBLE_VERSION})")
    return payload


def training_record(checkpoint: Path) -> dict[str, Any]:
    """What a resolved controller cost: iteration, env steps, child steps (twins included), episodes;
    for a selection pick also ``run_child_steps`` (the whole run it was picked from) and
    ``selection_child_steps`` (tuning cosine and scoring checkpoints); None where not recorded."""
    payload = load_export(checkpoint) if checkpoint.is_file() else None
    meta = payload["training"] if payload is not None else read_metadata(checkpoint)
    record = {key: meta.get(key) for key in ("iteration", "env_steps", "child_steps", "episodes")}
    selection = (payload or {}).get("selection") or {}
    record["run_child_steps"] = selection.get("run_child_steps")
    record["selection_child_steps"] = selection.get("child_steps")
    return record


def output_dir_of(checkpoint: Path) -> Path:
    """The train-controller output directory a resolved checkpoint or export lies in."""
    return checkpoint.parent if checkpoint.is_file() else checkpoint.parent.parent


def export_sections(payload: Mapping[str, Any]) -> tuple[TaskConfig, ControllerConfig]:
    """The task and controller sections an export was trained with, validated."""
    run = stored_sections({"task": payload["task"], "controller": payload["controller"]})
    return run.task, run.controller
