"""Typed, validated run configuration: one object per run, defaults in one place.

A config file (YAML or JSON) has up to six sections: ``task`` (the child network
and its data), ``controller`` (the learned controller's env and PPO), ``compare``
(the Tune comparison), ``recommend`` (LRBench selection), ``evaluate`` (the controller
evidence protocol) and ``resources`` (where
work runs). Every key is checked where it enters: an unknown key, a wrong type or
a value outside its allowed set raises :class:`ConfigError` naming the field, the
value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import yaml

from lrservice.child.names import DATASETS, LOSSES, MODELS
from lrservice.child.plugins import check_spec, is_plugin
from lrservice.errors import ConfigError
from lrservice.kinds import get_kind, kinds
from lrservice.schedules.compose import policy_from_dict

OPTIMIZERS = ("adam", "sgd", "momentum")
DEVICES = ("auto", "cpu", "cuda")
ACTION_SPACES = ("discrete", "continuous", "levels")
REWARDS = ("dense", "final", "log_improvement")
REWARD_BASELINES = ("none", "twin")
ACROSS_RUNS = ("pick", "ensemble")  # lrservice.control.runs: how controller.train_seeds' runs make controller.pt
ENVELOPES = ("none", "cosine", "linear")  # lrservice.control.actions.envelope gives their shapes
# the keys of lrservice.child.features.FEATURE_SETS (a test checks)
FEATURE_SETS = ("paper", "extended", "invariant", "anchored")
ARM_KINDS = kinds()  # the built-in arm kinds (lrservice.kinds); a user's is "package.module:Class"
DEFAULT_DATA_DIR = "~/.cache/lrservice/data"


def _choice(path: str, value: Any, allowed: tuple) -> None:
    if value not in allowed:
        raise ConfigError(
            f"{path}: {value!r} is not allowed; choose one of: {', '.join(map(str, allowed))}"
        )


def _positive(path: str, value: float | int, *, allow_zero: bool = False) -> None:
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (isinstance(value, float) and not math.isfinite(value)):
        bound = ">= 0" if allow_zero else "> 0"
        raise ConfigError(f"{path}: {value!r} is not allowed; it must be a finite number {bound}")


@dataclass(frozen=True)
class TaskConfig:
    """The child task: dataset, model, optimizer and training length."""

    dataset: str = "digits"
    """A built-in (:data:`lrservice.child.names.DATASETS`; ``digits`` ships with scikit-learn) or your
    loader ``"package.module:loader"``, called as ``loader(root, **dataset_args)`` (docs/own-task.md)."""
    dataset_args: dict = field(default_factory=dict)
    """Keyword arguments for the dataset loader."""
    model: str = "mlp"
    """A built-in (:data:`lrservice.child.names.MODELS`) or your factory ``"package.module:factory"``,
    called as ``factory(input_shape, num_classes, **model_args)``; it returns an ``nn.Module`` giving logits."""
    model_args: dict = field(default_factory=dict)
    """Keyword arguments for the model factory (e.g. ``hidden: [128, 64]`` for ``mlp``)."""
    loss: str = "cross_entropy"
    """``cross_entropy`` or your ``"package.module:loss"``, called as ``loss(outputs, targets)`` -> the mean
    over the batch."""
    classification: bool | None = None
    """Whether targets are class indices, so accuracy and steps-to-target are reported; ``None``: true
    exactly when ``loss`` is ``cross_entropy``."""
    plugin_dirs: tuple[str, ...] = ()
    """Directories searched for plugin modules before ``sys.path``; when a plugin is named and this is
    empty, loading the config fills in the config file's directory and the working directory."""
    batch_size: int = 64
    """Training samples per step."""
    steps: int = 1000
    """Training steps of one child run (an episode for the controller, a trial for Tune)."""
    optimizer: str = "adam"
    """One of :data:`OPTIMIZERS`; its LR is what every schedule sets."""
    momentum: float = 0.9
    """Momentum of the ``momentum`` optimizer, in [0, 1)."""
    weight_decay: float = 0.0
    """L2 weight decay passed to the optimizer, >= 0."""
    seed: int = 0
    """Base seed: the child's weights and batch order where no per-trial seed is given (the recommender's
    search and compose stages, the controller's PPO); comparison trials use the ``compare`` seeds."""
    data_dir: str = DEFAULT_DATA_DIR
    """Where torchvision datasets live; the default gives way to ``$LRSERVICE_DATA`` when that is set."""
    download: bool = False
    """Let torchvision download a missing dataset into ``data_dir`` (``--download``)."""
    val_size: int = 5000
    """Training samples held out (by a fixed seed) as the validation split."""
    val_subset: int = 512
    """The first validation samples: the fixed subset that progress metrics and the controller's reward use."""
    max_train_samples: int | None = None
    """Cap on the training split (None: all of it), for quick runs."""
    eval_every: int = 10
    """Steps between evaluations on the validation subset (one report row each)."""
    device: str = "auto"
    """One of :data:`DEVICES`; ``auto`` uses CUDA when the process sees a GPU."""

    def validate(self, path: str = "task") -> None:
        check_spec(f"{path}.dataset", self.dataset, DATASETS, "dataset loader")
        check_spec(f"{path}.model", self.model, MODELS, "model factory")
        check_spec(f"{path}.loss", self.loss, LOSSES, "loss")
        if self.classification is False and self.loss == "cross_entropy":
            raise ConfigError(f"{path}.classification: false is not allowed with loss 'cross_entropy' "
                              "(it needs class indices); name your own loss")
        _choice(f"{path}.optimizer", self.optimizer, OPTIMIZERS)
        _choice(f"{path}.device", self.device, DEVICES)
        flat = {"mnist1d": "1-D signals of length 40", "tabular": "rows of tabular features"}
        if self.dataset in flat and self.model in ("lenet5", "resnet18"):
            raise ConfigError(f"{path}.model: {self.model!r} is not allowed with dataset {self.dataset!r} "
                              f"({flat[self.dataset]}, no 2-D image); use 'mlp' or a plugin model")
        for name in ("batch_size", "steps", "val_size", "val_subset", "eval_every"):
            _positive(f"{path}.{name}", getattr(self, name))
        _positive(f"{path}.weight_decay", self.weight_decay, allow_zero=True)
        if not 0 <= self.momentum < 1:
            raise ConfigError(f"{path}.momentum: {self.momentum!r} is not allowed; it must be in [0, 1)")
        if self.max_train_samples is not None:
            _positive(f"{path}.max_train_samples", self.max_train_samples)

    @property
    def is_classification(self) -> bool:
        """Targets are class indices: accuracy is measured (see ``classification``)."""
        return self.loss == "cross_entropy" if self.classification is None else self.classification

    @property
    def plugins(self) -> tuple[str, ...]:
        """The fields that name a plugin rather than a built-in."""
        return tuple(name for name in ("dataset", "model", "loss") if is_plugin(getattr(self, name)))

    @property
    def data_path(self) -> Path:
        """The data directory with ``~`` and ``$LRSERVICE_DATA`` resolved."""
        raw = os.environ.get("LRSERVICE_DATA") if self.data_dir == DEFAULT_DATA_DIR else None
        return Path(os.path.expanduser(raw or self.data_dir))


@dataclass(frozen=True)
class ControllerConfig:
    """The learned controller, in four groups: episode rules, PPO training, checkpoint selection, output.

    The episode rules say what the agent sees, does and is paid; a deployed controller needs
    them to act, so they are saved with it (lrservice.control.actions applies them). The rest
    configures RLlib's PPO (lrservice.control.ppo) and what ``train-controller`` keeps.
    """

    # -- episode rules ------------------------------------------------------------------
    features: str = "paper"
    """The observation, one of :data:`FEATURE_SETS`: ``paper`` (the 7 of 1909.09712), ``extended`` (+ progress,
    log10 LR, log train/val loss) or ``invariant`` (progress, log10 LR, log val/train loss, log prediction change
    over prediction spread: nothing whose scale depends on the task, so it can transfer) or ``anchored``
    (``invariant`` + log of the validation loss over its value at the run's first observation: how far this run
    has come, which tells tasks apart without a task-dependent scale). Under an envelope the log10 level is
    appended."""
    action_space: str = "discrete"
    """One of :data:`ACTION_SPACES`: ``discrete`` (action i multiplies the LR by ``factors[i]``; with no
    ``factors``, the paper's up/down/keep by ``factor``), ``continuous`` (a log-factor a in [-1, 1]: the LR is
    multiplied by ``factor ** a``) or ``levels`` (action i sets the LR to ``levels[i]``: absolute, so
    exploration noise does not compound over decisions)."""
    action_every: int = 10
    """Child steps between two decisions, > 0; the last block of a run is shortened to what is left. Training,
    evaluation and a deployed controller decide at steps 0, N, 2N, ..."""
    factor: float = 1.05
    """> 1: the paper's discrete actions multiply the LR by ``factor``, ``1 / factor`` or 1; a continuous
    action's largest move (``factor ** a``, a in [-1, 1]). Unused with ``factors`` or ``levels``."""
    factors: tuple[float, ...] = ()
    """Discrete actions, one per factor (each > 0, at least two), e.g. [0.5, 0.8, 1, 1.25, 2]: larger moves
    than the paper's 1.05 let a controller anneal within one run. Empty: ``(factor, 1/factor, 1)``."""
    levels: tuple[float, ...] = ()
    """With ``action_space: levels`` only: the LRs an action chooses from (at least two, each within
    ``[lr_min, lr_max]``)."""
    lr_min: float = 1e-5
    """Lower end of the LR range, > 0: after every action the LR (under an envelope, the level) is clipped to
    ``[lr_min, lr_max]``, so no run of moves in one direction takes it to 0 or without bound."""
    lr_max: float = 1e-1
    """Upper end of the LR range, > ``lr_min``."""
    lr_noise_std: float = 0.0
    """>= 0: each action's LR is multiplied by ``exp(N(0, lr_noise_std))`` in training episodes (relative, never
    negative; the public re-implementation's additive noise means nothing at 1e-2); 0 at deployment always."""
    initial_lrs: tuple[float, ...] = (1e-2, 1e-3, 1e-4)
    """Each training episode starts at one of these LRs, drawn uniformly (each within ``[lr_min, lr_max]``), so
    the controller learns to act from high and low starts alike."""
    initial_lr: float | None = None
    """If set, every episode starts at this LR instead of drawing from ``initial_lrs`` (within
    ``[lr_min, lr_max]``)."""
    reward: str = "dense"
    """One of :data:`REWARDS`: ``dense`` (-validation loss after each action, the paper's), ``final``
    (-validation loss at the end, 0 before) or ``log_improvement`` (log L_prev - log L_now: the return
    telescopes to log L_0/L_T, scale-free on any task). Losses are on the fixed validation subset."""
    baseline: str = "none"
    """One of :data:`REWARD_BASELINES`: ``none``, or ``twin``: a reference child with the same initial weights
    and batch order trains under ``twin_policy`` and its reward is subtracted, so the return measures the
    controller against that schedule rather than the luck of the seed (twins double the child steps)."""
    twin_policy: dict = field(default_factory=dict)
    """With ``baseline: twin`` only: the twin's schedule as a ``policy`` arm's params (a zoo or composite
    policy of the child step, clipped to ``[lr_min, lr_max]``). Empty: the controller that always keeps, i.e.
    the episode's initial LR under the envelope."""
    divergence_penalty: float = 10.0
    """>= 0: the reward is ``-divergence_penalty`` when the child's loss becomes non-finite, and the episode
    ends there."""
    envelope: str = "none"
    """One of :data:`ENVELOPES`: ``none`` (the LR in force is the controller's LR), or a base schedule over the
    episode the controller steers, ``cosine`` ((1 + cos pi p) / 2) or ``linear`` (1 - p), p = progress: actions
    move a level and the LR in force is ``level * envelope(p)``, so "keep" already anneals and the policy
    learns corrections."""
    envelope_warmup: float = 0.0
    """In [0, 1), with an envelope only: the fraction of the episode over which the envelope first rises
    linearly from :data:`lrservice.control.actions.WARMUP_START` to 1, its decay then running over the rest
    (0: no warmup). The level is the envelope's peak, so a run's initial LR is where the level starts, as a
    torch warmup scheduler treats the optimizer's LR."""
    tasks: tuple[TaskConfig, ...] = ()
    """Task sections episodes are drawn from (multi-task training; each validated as ``task``): round-robin
    per env with at least as many envs as tasks, else uniformly per episode. Empty: the run's ``task``."""
    # -- PPO training -------------------------------------------------------------------
    hidden: tuple[int, ...] = (32, 32)
    """Hidden layer widths (each > 0) of the actor and of the critic, separate tanh MLPs; the actor's layers are
    what the export holds."""
    iterations: int = 20
    """PPO iterations to train, > 0 (``--iterations`` overrides; with ``--resume`` it is the total to reach)."""
    train_batch_size: int = 400
    """Env steps (= controller decisions) sampled per PPO iteration, > 0; an episode has about ``task.steps /
    action_every`` of them."""
    minibatch_size: int = 100
    """Env steps per SGD minibatch, > 0 and <= ``train_batch_size``."""
    num_epochs: int = 5
    """SGD passes over each iteration's batch, > 0."""
    ppo_lr: float = 3e-4
    """PPO's optimizer (Adam) learning rate, > 0: the agent's, not the child's."""
    ppo_lr_final: float | None = None
    """If set, in [0, ``ppo_lr``]: PPO's LR decays linearly from ``ppo_lr`` to it over the run's env steps (its
    total iterations x ``train_batch_size``), so the last checkpoints settle instead of jittering."""
    gamma: float = 0.99
    """PPO's discount, in (0, 1]; with ``log_improvement`` the default configs use 1, so the return is exactly
    the telescoped log L_0/L_T (against a twin, log L_T^twin/L_T)."""
    gae_lambda: float = 1.0
    """GAE's lambda, in [0, 1]; 1 gives Monte Carlo advantages, which the ablation in docs/controller.md chose
    over the paper's 0.95."""
    entropy_coeff: float = 0.0
    """>= 0: PPO's entropy bonus, rewarding a spread-out policy so it keeps exploring (the default configs:
    0.01)."""
    entropy_coeff_final: float | None = None
    """If set, in [0, ``entropy_coeff``]: the entropy bonus anneals linearly from ``entropy_coeff`` to it over the
    run's env steps, as ``ppo_lr_final`` does PPO's LR: explore early, commit late."""
    clip_param: float = 0.3
    """> 0: PPO's clipping range, its trust region: how far one update may move the policy's probabilities."""
    kl_coeff: float = 0.2
    """>= 0: the starting weight of PPO's KL penalty (RLlib's adaptive one, beside the clipping): after each
    update it is multiplied by 1.5 if the policy moved more than 2 x ``kl_target``, by 0.5 if less than half
    of it; 0 turns the penalty off. The default is RLlib's."""
    kl_target: float = 0.01
    """> 0: the KL divergence per update the penalty steers towards (RLlib's default); smaller holds each
    update closer to the policy that sampled the batch."""
    num_env_runners: int = 1
    """RLlib env runners sampling episodes in parallel, >= 0 (0: the driver samples); each asks for the
    resources ``resources`` plans for env runners."""
    num_envs_per_env_runner: int = 1
    """Envs (children) per runner, > 0; above 1 they train as one batched computation
    (:class:`lrservice.control.vector_env.LRVectorEnv`), measured ~2x faster per child."""
    checkpoint_every: int = 5
    """Iterations between checkpoints, > 0 (one is also written after the last): each is exported as
    ``last.pt`` and, with ``selection_seeds``, scored."""
    # -- checkpoint selection (lrservice.control.selection) ------------------------------
    selection_seeds: tuple[int, ...] = ()
    """Distinct non-negative child seeds every kept checkpoint is scored on against tuned cosine; the best is
    exported as ``controller.pt``, because PPO's policy moves between checkpoints by as much as the gap to
    tuned cosine. Empty: no selection, ``controller.pt`` is the last checkpoint. Must be apart from
    ``evaluate.tune_seeds``, ``evaluate.seeds`` and ``task.seed`` (checked at load)."""
    train_seeds: tuple[int, ...] = ()
    """Several PPO runs of this recipe, one per seed (each run's ``task.seed``: PPO's and the child seeds it
    draws), each in ``OUTPUT/seed_<s>/`` with its own selection; ``controller.pt`` is the best pick across all
    of them (:mod:`lrservice.control.runs`), because which run of a recipe turns out well is itself a draw.
    Needs ``selection_seeds``. Empty: one run, with ``task.seed``."""
    across_runs: str = "pick"
    """How the runs of ``train_seeds`` make ``controller.pt``: ``pick``, the best run's pick on the selection
    seeds; ``ensemble``, every run's pick acting together, on the mean of their action probabilities (discrete
    or levels actions), which needs no choice between runs that selection seeds cannot tell apart (on digits
    it was not reliably better than its runs; docs/controller.md, "An ensemble of runs")."""
    # -- output -------------------------------------------------------------------------
    checkpoint_dir: str = "results/controller"
    """``train-controller``'s output directory when ``--output`` is not given (``~`` expanded)."""

    @property
    def action_factors(self) -> tuple[float, ...]:
        """What each discrete action multiplies the LR by."""
        return self.factors or (self.factor, 1.0 / self.factor, 1.0)

    def validate(self, path: str = "controller") -> None:
        _choice(f"{path}.features", self.features, FEATURE_SETS)
        _choice(f"{path}.action_space", self.action_space, ACTION_SPACES)
        _choice(f"{path}.reward", self.reward, REWARDS)
        _choice(f"{path}.baseline", self.baseline, REWARD_BASELINES)
        _choice(f"{path}.envelope", self.envelope, ENVELOPES)
        if not 0.0 <= self.envelope_warmup < 1.0:
            raise ConfigError(f"{path}.envelope_warmup: {self.envelope_warmup!r} is not allowed; it must be a "
                              "fraction of the episode in [0, 1)")
        if self.envelope_warmup and self.envelope == "none":
            raise ConfigError(f"{path}.envelope_warmup: is only used with an envelope (envelope is 'none'); "
                              "set envelope: cosine or linear, or remove it")
        for name in ("action_every", "iterations", "train_batch_size", "minibatch_size",
                     "num_epochs", "ppo_lr", "num_envs_per_env_runner", "checkpoint_every",
                     "lr_min", "lr_max", "clip_param", "kl_target"):
            _positive(f"{path}.{name}", getattr(self, name))
        for name in ("lr_noise_std", "divergence_penalty", "entropy_coeff", "num_env_runners", "kl_coeff"):
            _positive(f"{path}.{name}", getattr(self, name), allow_zero=True)
        if not self.factor > 1.0:
            raise ConfigError(f"{path}.factor: {self.factor!r} is not allowed; it must be > 1 (LR is multiplied "
                              f"or divided by it)")
        for i, f in enumerate(self.factors):
            _positive(f"{path}.factors[{i}]", f)
        if len(self.factors) == 1:
            raise ConfigError(f"{path}.factors: {list(self.factors)!r} is not allowed; give at least two "
                              f"factors, e.g. [0.5, 1, 2]")
        self._validate_levels(path)
        if self.lr_min >= self.lr_max:
            raise ConfigError(f"{path}.lr_min: {self.lr_min!r} must be below lr_max ({self.lr_max!r})")
        if self.ppo_lr_final is not None and not 0 <= self.ppo_lr_final <= self.ppo_lr:
            raise ConfigError(f"{path}.ppo_lr_final: {self.ppo_lr_final!r} is not allowed; it must be in [0, ppo_lr] "
                              f"= [0, {self.ppo_lr}] (PPO's LR decays linearly to it)")
        if self.entropy_coeff_final is not None and not 0 <= self.entropy_coeff_final <= self.entropy_coeff:
            raise ConfigError(f"{path}.entropy_coeff_final: {self.entropy_coeff_final!r} is not allowed; it must be in "
                              f"[0, entropy_coeff] = [0, {self.entropy_coeff}] (the entropy bonus anneals to it)")
        if not 0 < self.gamma <= 1:
            raise ConfigError(f"{path}.gamma: {self.gamma!r} is not allowed; it must be in (0, 1]")
        if not 0 <= self.gae_lambda <= 1:
            raise ConfigError(f"{path}.gae_lambda: {self.gae_lambda!r} is not allowed; it must be in [0, 1]")
        lrs = self.start_lrs
        if not lrs:
            raise ConfigError(f"{path}.initial_lrs: must name at least one learning rate")
        for lr in lrs:
            self._check_in_range(f"{path}.initial_lrs", lr)
        if self.twin_policy:
            if self.baseline != "twin":
                raise ConfigError(f"{path}.twin_policy: is only used with baseline: twin (baseline is "
                                  f"{self.baseline!r})")
            try:
                policy_from_dict(self.twin_policy)
            except ValueError as exc:
                raise ConfigError(f"{path}.twin_policy: {exc}") from None
        for i, task in enumerate(self.tasks):
            task.validate(f"{path}.tasks[{i}]")
        if len(self.hidden) < 1 or any(h <= 0 for h in self.hidden):
            raise ConfigError(f"{path}.hidden: {list(self.hidden)!r} is not allowed; give positive layer widths, "
                              f"e.g. [32, 32]")
        if self.minibatch_size > self.train_batch_size:
            raise ConfigError(f"{path}.minibatch_size: {self.minibatch_size} must not exceed train_batch_size "
                              f"({self.train_batch_size})")
        seeds = list(self.selection_seeds)  # paired per seed with tuned cosine: a repeat would collapse a pair
        if seeds and (min(seeds) < 0 or len(set(seeds)) != len(seeds)):
            raise ConfigError(f"{path}.selection_seeds: {seeds} is not allowed; give distinct non-negative integers "
                              "(or [] for no checkpoint selection)")
        runs = list(self.train_seeds)
        if runs and (min(runs) < 0 or len(set(runs)) != len(runs)):
            raise ConfigError(f"{path}.train_seeds: {runs} is not allowed; give distinct non-negative integers "
                              "(or [] for one run with task.seed)")
        if runs and not seeds:
            raise ConfigError(f"{path}.train_seeds: {runs} needs {path}.selection_seeds: the pick across runs is "
                              "made on them")
        _choice(f"{path}.across_runs", self.across_runs, ACROSS_RUNS)
        if self.across_runs == "ensemble" and len(runs) < 2:
            raise ConfigError(f"{path}.across_runs: ensemble needs {path}.train_seeds to name at least two runs "
                              f"(it names {runs})")
        if self.across_runs == "ensemble" and self.action_space == "continuous":
            raise ConfigError(f"{path}.across_runs: ensemble averages action probabilities, which continuous "
                              f"actions do not have; use action_space: discrete or levels, or across_runs: pick")

    @property
    def start_lrs(self) -> tuple[float, ...]:
        """The initial LRs episodes start from: ``initial_lrs``, or the one fixed ``initial_lr``."""
        return self.initial_lrs if self.initial_lr is None else (self.initial_lr,)

    def _validate_levels(self, path: str) -> None:
        if self.action_space != "levels":
            if self.levels:
                raise ConfigError(f"{path}.levels: is only used with action_space: levels (action_space is "
                                  f"{self.action_space!r})")
            return
        if len(self.levels) < 2:
            raise ConfigError(f"{path}.levels: {list(self.levels)!r} is not allowed; action_space: levels needs "
                              f"at least "
                              "two learning rates, e.g. [0.0001, 0.001, 0.003]")
        for i, lr in enumerate(self.levels):
            self._check_in_range(f"{path}.levels[{i}]", lr)

    def _check_in_range(self, field_path: str, lr: float) -> None:
        """An LR the controller starts from or sets must lie within the clipping range."""
        if not self.lr_min <= lr <= self.lr_max:
            raise ConfigError(f"{field_path}: {lr!r} is not allowed; it must lie in [lr_min, lr_max] = "
                              f"[{self.lr_min}, {self.lr_max}]")


@dataclass(frozen=True)
class ArmConfig:
    """One arm of a comparison: a schedule family with fixed params and/or a grid to tune.

    ``kind`` names an :class:`lrservice.kinds.ArmKind` (docs/compare.md lists them): a
    schedule (constant, step, cosine, cyclic, policy, warmup_cosine, wsd, onecycle, linear),
    an optimizer (schedule_free, prodigy), ``controller`` or ``pbt``; or a user's kind as
    ``"package.module:Class"``.
    """

    name: str
    """The arm's label in tables and plots: letters, digits, ``-`` and ``_``."""
    kind: str
    """One of :data:`ARM_KINDS`."""
    params: dict = field(default_factory=dict)
    """Fixed params of the kind (docs/compare.md lists them per kind)."""
    grid: dict = field(default_factory=dict)
    """Param name -> list of values; the tune phase tries every combination and the eval phase runs the winner."""

    def validate(self, path: str = "arm") -> None:
        get_kind(self.kind, f"{path}.kind")  # a built-in name, or a user's "package.module:Class"
        if not self.name or not str(self.name).replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{path}.name: {self.name!r} is not allowed; use letters, digits, '-' and '_'")
        for key, values in self.grid.items():
            if not isinstance(values, list) or not values:
                raise ConfigError(f"{path}.grid.{key}: {values!r} is not allowed; give a non-empty list of values")


def _default_arms() -> tuple[ArmConfig, ...]:
    return (
        ArmConfig("constant", "constant", grid={"lr": [1e-3, 3e-3, 1e-2]}),
        ArmConfig("step", "step", grid={"lr": [3e-3, 1e-2], "step_size": [250], "gamma": [0.5, 0.1]}),
        ArmConfig("cosine", "cosine", grid={"lr": [3e-3, 1e-2]}),
        ArmConfig("cyclic", "cyclic", params={"base_lr": 1e-4},
                  grid={"max_lr": [3e-3, 1e-2], "step_size_up": [100, 250]}),
    )


@dataclass(frozen=True)
class CompareConfig:
    """The Tune comparison: arms, seeds, target accuracy and output location."""

    name: str = "compare"
    """The run's name: its files go to ``output_dir/name``."""
    arms: tuple[ArmConfig, ...] = field(default_factory=_default_arms)
    """The schedules compared; names must be unique."""
    tune_seeds: tuple[int, ...] = (100,)
    """Child seeds of the tune phase (grid search); kept apart from ``seeds``."""
    seeds: tuple[int, ...] = (0, 1, 2, 3, 4)
    """Child seeds of the eval phase: every arm's winner runs once per seed."""
    target_accuracy: float = 0.9
    """Validation accuracy in (0, 1] whose first crossing gives steps-to-target."""
    output_dir: str = "results"
    """Parent of the run dir (``~`` expanded)."""
    max_concurrent_trials: int = 0
    """Trials running at once; 0 lets Tune fill the cluster."""
    max_failures: int = 2
    """Retries of a failed trial, each from its last checkpoint."""
    checkpoint_every: int = 100
    """Steps between trial checkpoints (and at the end)."""
    report: bool = True
    """Write ``report.md``, ``report.html`` and plots after the Parquet files."""

    def validate(self, path: str = "compare") -> None:
        if not self.arms:
            raise ConfigError(f"{path}.arms: give at least one arm")
        names = [arm.name for arm in self.arms]
        if len(set(names)) != len(names):
            raise ConfigError(f"{path}.arms: arm names must be unique, got {names}")
        for i, arm in enumerate(self.arms):
            arm.validate(f"{path}.arms[{i}]")
        if not self.seeds:
            raise ConfigError(f"{path}.seeds: give at least one seed")
        if not 0 < self.target_accuracy <= 1:
            raise ConfigError(f"{path}.target_accuracy: {self.target_accuracy!r} is not allowed; it must be in (0, 1]")
        _positive(f"{path}.max_concurrent_trials", self.max_concurrent_trials, allow_zero=True)
        _positive(f"{path}.max_failures", self.max_failures, allow_zero=True)
        _positive(f"{path}.checkpoint_every", self.checkpoint_every)
        if not self.tune_seeds and any(arm.grid for arm in self.arms):
            raise ConfigError(f"{path}.tune_seeds: give at least one seed when an arm has a grid")


RECOMMEND_METRICS = ("val_accuracy", "val_loss")
DEFAULT_BASE_LR = {"adam": 1e-3, "sgd": 1e-2, "momentum": 1e-2}


@dataclass(frozen=True)
class RecommendConfig:
    """LRBench selection: target accuracy, iteration budget, search size and verification."""

    target_accuracy: float = 0.9
    """Validation accuracy in (0, 1] to reach; the recommendation minimises steps to reach it."""
    budget: int = 1000
    """Training steps of every run (ASHA's ``max_t``)."""
    num_samples: int = 34
    """Zoo policies sampled for the search stage (FIX at ``base_lr`` is added)."""
    top_k: int = 4
    """Best searched and composed candidates that go on to verification."""
    verify_seeds: tuple[int, ...] = (11, 12, 13)
    """Child seeds of the verify stage; the first also runs the ``lr_scales`` check."""
    output_dir: str = "results"
    """Parent of the run dir (``~`` expanded)."""
    name: str = "recommend"
    """The run's name: its files go to ``output_dir/name``."""
    base_lr: float | None = None
    """FIX's reference LR; None: :data:`DEFAULT_BASE_LR` of the optimizer."""
    lr_min: float | None = None
    """Lowest sampled LR; None: ``base_lr / 10``."""
    lr_max: float | None = None
    """Highest sampled LR; None: ``30 * base_lr``."""
    metric: str = "val_accuracy"
    """What ASHA compares (one of :data:`RECOMMEND_METRICS`)."""
    grace_fraction: float = 0.1
    """ASHA stops no run before this fraction of the budget (rounded up to ``task.eval_every``)."""
    reduction_factor: int = 3
    """ASHA's halving rate: about 1 in this many runs goes on at each rung."""
    compose_fractions: tuple[float, ...] = (0.5, 0.75)
    """Composition boundaries as fractions of the budget, each in (0, 1)."""
    num_composites: int = 3
    """Composites of the best searched policies run in the compose stage (0: skip it)."""
    lr_scales: tuple[float, ...] = (0.1, 0.5, 5.0, 10.0)
    """Factors on a candidate's LR for the robustness check on the first verify seed."""
    max_concurrent_trials: int = 0
    """Trials running at once; 0 lets Tune fill the cluster."""

    def validate(self, path: str = "recommend") -> None:
        if not 0 < self.target_accuracy <= 1:
            raise ConfigError(f"{path}.target_accuracy: {self.target_accuracy!r} is not allowed; it must be in (0, 1]")
        for name in ("budget", "num_samples", "top_k"):
            _positive(f"{path}.{name}", getattr(self, name))
        _choice(f"{path}.metric", self.metric, RECOMMEND_METRICS)
        if not self.verify_seeds:
            raise ConfigError(f"{path}.verify_seeds: give at least one seed")
        if not self.name or not str(self.name).replace("-", "").replace("_", "").isalnum():
            raise ConfigError(f"{path}.name: {self.name!r} is not allowed; use letters, digits, '-' and '_'")
        for name in ("base_lr", "lr_min", "lr_max"):
            if getattr(self, name) is not None:
                _positive(f"{path}.{name}", getattr(self, name))
        if self.lr_min is not None and self.lr_max is not None and self.lr_min >= self.lr_max:
            raise ConfigError(f"{path}.lr_min: {self.lr_min!r} must be below lr_max ({self.lr_max!r})")
        if not 0 < self.grace_fraction <= 1:
            raise ConfigError(f"{path}.grace_fraction: {self.grace_fraction!r} is not allowed; it must be in (0, 1]")
        if self.reduction_factor < 2:
            raise ConfigError(f"{path}.reduction_factor: {self.reduction_factor!r} is not allowed; it must be an "
                              f"integer >= 2")
        for i, f in enumerate(self.compose_fractions):
            if not 0 < f < 1:
                raise ConfigError(f"{path}.compose_fractions[{i}]: {f!r} is not allowed; it must be in (0, 1)")
        _positive(f"{path}.num_composites", self.num_composites, allow_zero=True)
        for i, s in enumerate(self.lr_scales):
            _positive(f"{path}.lr_scales[{i}]", s)
        _positive(f"{path}.max_concurrent_trials", self.max_concurrent_trials, allow_zero=True)

    def lr_range(self, optimizer: str) -> tuple[float, float, float]:
        """``(base_lr, lr_min, lr_max)`` with the optimizer's defaults filled in."""
        base = self.base_lr if self.base_lr is not None else DEFAULT_BASE_LR[optimizer]
        lo = self.lr_min if self.lr_min is not None else base / 10
        hi = self.lr_max if self.lr_max is not None else base * 30
        if not lo <= base <= hi:
            raise ConfigError(f"recommend.base_lr: {base!r} is not allowed; it must lie in [lr_min, lr_max] = "
                              f"[{lo}, {hi}]")
        return base, lo, hi


def _default_rivals() -> tuple[ArmConfig, ...]:
    """The modern family every controller is measured against, each on a small grid. Warmup + cosine
    also over its warmup: a long one (30%) is the shape a learned controller's gain on digits turned
    out to be (docs/controller.md, "Where the shipped controller's gain comes from")."""
    lrs = [1e-3, 3e-3, 1e-2, 3e-2]
    return (
        ArmConfig("warmup_cosine", "warmup_cosine", grid={"lr": lrs, "warmup": [0.05, 0.3]}),
        ArmConfig("wsd", "wsd", grid={"lr": lrs}),
        ArmConfig("onecycle", "onecycle", grid={"lr": lrs}),
        ArmConfig("linear", "linear", grid={"lr": lrs}),
        ArmConfig("schedule_free", "schedule_free", grid={"lr": lrs}),
        ArmConfig("prodigy", "prodigy", grid={"d_coef": [0.5, 1.0, 2.0]}),
    )


@dataclass(frozen=True)
class EvaluateConfig:
    """The controller evidence protocol (``lrservice evaluate-controller``, shared/DESIGN.md).

    ``constant_grid``/``cosine_grid``: LRs each baseline is tuned over on ``tune_seeds`` (by
    mean final validation loss). ``seeds``: held-out child seeds for the comparison, never
    tuned on and never drawn in training (training draws 31-bit seeds at random; these are
    small). ``initial_lrs``: the controller's starting LRs (empty: ``controller.initial_lrs``).
    """

    tune_seeds: tuple[int, ...] = (100, 101)
    """Child seeds the rivals are tuned on (never held out)."""
    seeds: tuple[int, ...] = (1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009)
    """Held-out child seeds of the paired comparison."""
    constant_grid: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2)
    """LRs tuned constant is picked from."""
    cosine_grid: tuple[float, ...] = (1e-3, 3e-3, 1e-2, 3e-2)
    """LRs tuned cosine is picked from."""
    rivals: tuple[ArmConfig, ...] = field(default_factory=_default_rivals)
    """More tuned rivals, as compare arms of baseline kinds (name, kind, params, grid); the best of all,
    picked on the tune seeds, is a third reference. Names must differ from ``constant``/``cosine``."""
    initial_lrs: tuple[float, ...] = ()
    """The controller's starting LRs (empty: ``controller.initial_lrs``)."""
    output_dir: str = "results/evaluate"
    """Where the evaluation's files go (``--output`` overrides)."""

    def validate(self, path: str = "evaluate") -> None:
        names = ["constant", "cosine", *(r.name for r in self.rivals)]
        if len(set(names)) != len(names):
            raise ConfigError(f"{path}.rivals: rival names must be unique and not constant or cosine, got {names[2:]}")
        for i, rival in enumerate(self.rivals):
            rival.validate(f"{path}.rivals[{i}]")
        for name in ("tune_seeds", "seeds", "constant_grid", "cosine_grid"):
            if not getattr(self, name):
                raise ConfigError(f"{path}.{name}: give at least one value")
        for name in ("constant_grid", "cosine_grid", "initial_lrs"):
            for i, lr in enumerate(getattr(self, name)):
                _positive(f"{path}.{name}[{i}]", lr)
        for name in ("tune_seeds", "seeds"):  # paired per seed: a repeated seed would silently collapse
            seeds = list(getattr(self, name))
            if min(seeds) < 0 or len(set(seeds)) != len(seeds):
                raise ConfigError(f"{path}.{name}: {seeds} is not allowed; give distinct non-negative integers")
        shared = sorted(set(self.tune_seeds) & set(self.seeds))
        if shared:
            raise ConfigError(f"{path}.seeds: {shared} are also tune_seeds; held-out seeds must never be tuned on")


@dataclass(frozen=True)
class ResourcesConfig:
    """Where work runs: the Ray address and what each trial / env runner asks for.

    ``worker_resource`` names a custom resource that GPU worker nodes advertise
    (e.g. ``gpu_worker``); ``head_resource`` one the head advertises for learners.
    """

    address: str | None = None
    """Ray cluster to attach to (``--address``); None: ``$RAY_ADDRESS``, else start a local instance."""
    num_cpus: int | None = None
    """CPUs of a local Ray instance this process starts (None: all)."""
    cpus_per_trial: float = 1.0
    """CPUs each Tune trial asks for."""
    gpus_per_trial: float = 0.0
    """GPUs (fractions allowed) each Tune trial asks for when the cluster has GPUs."""
    gpus_per_env_runner: float = 0.0
    """GPUs (fractions allowed) each PPO env runner asks for when the cluster has GPUs."""
    worker_resource: str | None = None
    """Custom resource that worker nodes advertise; trials and env runners ask for a sliver of it."""
    head_resource: str | None = None
    """Custom resource that the head advertises; PPO learners ask for a sliver of it."""

    def validate(self, path: str = "resources") -> None:
        for name in ("cpus_per_trial", "gpus_per_trial", "gpus_per_env_runner"):
            _positive(f"{path}.{name}", getattr(self, name), allow_zero=True)
        if self.num_cpus is not None:
            _positive(f"{path}.num_cpus", self.num_cpus)


@dataclass(frozen=True)
class RunConfig:
    """A whole run: every section with its defaults."""

    task: TaskConfig = field(default_factory=TaskConfig)
    """The child network, its data and its training length."""
    controller: ControllerConfig = field(default_factory=ControllerConfig)
    """The learned controller's env and PPO settings."""
    compare: CompareConfig = field(default_factory=CompareConfig)
    """The Tune comparison of schedules."""
    recommend: RecommendConfig = field(default_factory=RecommendConfig)
    """The LRBench recommender."""
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    """The controller evidence protocol."""
    resources: ResourcesConfig = field(default_factory=ResourcesConfig)
    """Where work runs."""

    def validate(self, seed_roles: bool = True) -> "RunConfig":
        """Every section, then (``seed_roles``) that no seed plays two roles across sections."""
        for f in dataclasses.fields(self):
            getattr(self, f.name).validate(f.name)
        if seed_roles:
            self._check_selection_seeds()
        return self

    def _check_selection_seeds(self) -> None:
        """Selection seeds pick a checkpoint: reporting or tuning on them, or training on one, would bias it."""
        chosen = set(self.controller.selection_seeds)
        roles = (("evaluate.tune_seeds", self.evaluate.tune_seeds), ("evaluate.seeds (held-out)", self.evaluate.seeds),
                 ("task.seed (the training seed)", (self.task.seed,)),
                 ("controller.train_seeds (training seeds)", self.controller.train_seeds))
        for role, seeds in roles:
            shared = sorted(chosen & set(seeds))
            if shared:
                raise ConfigError(f"controller.selection_seeds: {shared} are also {role}; selection seeds must be "
                                  "apart from tune, held-out and training seeds")

    def to_dict(self) -> dict:
        return _to_plain(dataclasses.asdict(self))

    def replace(self, **sections: Any) -> "RunConfig":
        """A copy with whole sections replaced or updated from dicts of fields."""
        updated = {}
        for name, value in sections.items():
            current = getattr(self, name)
            updated[name] = value if dataclasses.is_dataclass(value) else dataclasses.replace(current, **value)
        return dataclasses.replace(self, **updated).validate()


def _to_plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_to_plain(v) for v in value]
    return value


def _type_name(tp: Any) -> str:
    return getattr(tp, "__name__", None) or str(tp).replace("typing.", "")


def _coerce(path: str, tp: Any, value: Any) -> Any:
    """Check ``value`` against the annotation ``tp`` and convert lists to tuples."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(path, arg, value)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0])
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{path}: {value!r} is not allowed; expected a list")
        item_tp = typing.get_args(tp)[0]
        return tuple(_coerce(f"{path}[{i}]", item_tp, v) for i, v in enumerate(value))
    if origin is dict or tp is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{path}: {value!r} is not allowed; expected a mapping")
        return dict(value)
    if dataclasses.is_dataclass(tp):
        return _build(tp, value, path)
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"{path}: {value!r} is not allowed; expected a number")
        return float(value)
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{path}: {value!r} is not allowed; expected an integer")
        return value
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{path}: {value!r} is not allowed; expected true or false")
        return value
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{path}: {value!r} is not allowed; expected a string")
        return value
    return value


def _join(path: str, name: str) -> str:
    return f"{path}.{name}" if path else name


def _build(cls: type, data: Any, path: str) -> Any:
    if not isinstance(data, Mapping):
        raise ConfigError(f"{path}: expected a mapping of fields, got {data!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - set(fields))
    if unknown:
        raise ConfigError(
            f"{_join(path, unknown[0])}: unknown field; allowed fields are: {', '.join(fields)}"
        )
    kwargs = {}
    for name, value in data.items():
        kwargs[name] = _coerce(_join(path, name), hints[name], value)
    missing = [
        n for n, f in fields.items()
        if n not in kwargs and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise ConfigError(f"{_join(path, missing[0])}: required field is missing")
    return cls(**kwargs)


def config_from_dict(data: Mapping[str, Any], base_dir: str | os.PathLike | None = None) -> RunConfig:
    """Build and validate a :class:`RunConfig` from plain data (as parsed from YAML/JSON).

    A task that names a plugin and no ``plugin_dirs`` gets ``base_dir`` (the config file's
    directory) and the working directory, as absolute paths, so trials on Ray workers import
    the same module the driver checked.
    """
    run = _build(RunConfig, data or {}, "").validate()
    dirs = tuple(dict.fromkeys(str(Path(d).resolve()) for d in (base_dir, os.getcwd()) if d is not None))
    fill = lambda t: dataclasses.replace(t, plugin_dirs=dirs) if t.plugins and not t.plugin_dirs else t
    tasks = tuple(fill(t) for t in run.controller.tasks)
    if fill(run.task) is run.task and tasks == run.controller.tasks:
        return run
    return dataclasses.replace(run, task=fill(run.task),
                               controller=dataclasses.replace(run.controller, tasks=tasks)).validate()


def stored_sections(data: Mapping[str, Any]) -> RunConfig:
    """Sections a run stored (a checkpoint's task and controller, an env's config), each validated.

    The seeds' roles across sections were checked against the writing run's own sections; the
    defaults that stand in for the sections not stored must not refuse them again.
    """
    return _build(RunConfig, data or {}, "").validate(seed_roles=False)


def load_config(path: str | os.PathLike) -> RunConfig:
    """Read a YAML or JSON config file into a validated :class:`RunConfig`.

    Every problem with the file itself (missing, empty, not text, not parseable, not a
    mapping) is one :class:`ConfigError` line naming the file: an empty file must not
    silently become the default comparison.
    """
    p = Path(path)
    if not p.is_file():
        what = "is a directory, not a config file" if p.is_dir() else "does not exist"
        raise ConfigError(f"config: file {str(p)!r} {what}")
    raw = p.read_bytes()
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"config: {p} is not a text file (not UTF-8); give a YAML or JSON config") from None
    if "\x00" in text:
        raise ConfigError(f"config: {p} is a binary file; give a YAML or JSON config")
    sections = ", ".join(f.name for f in dataclasses.fields(RunConfig))
    empty = ConfigError(f"config: {p} is empty; give at least one section ({sections}); "
                        "write `{}` to run with every default")
    if not text.strip():
        raise empty
    if p.suffix == ".json":
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config: {p} is not valid JSON: {exc}") from None
    else:
        try:
            data = yaml.safe_load(text)
        except yaml.YAMLError as exc:
            raise ConfigError(f"config: {p} is not valid YAML: {_yaml_problem(exc)}") from None
    if data is None:  # only comments, `---` or `null`
        raise empty
    if not isinstance(data, Mapping):
        raise ConfigError(f"config: {p} must hold a mapping with sections {sections}")
    return config_from_dict(data, base_dir=p.parent)


def _yaml_problem(exc: Exception) -> str:
    """A YAML error in one line: the problem and where (line and column, 1-based)."""
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    mark = getattr(exc, "problem_mark", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    context = getattr(exc, "context", None)
    return f"{problem}{where}" + (f" ({context})" if context else "")
