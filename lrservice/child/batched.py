"""BatchedChildTrainer: K child networks trained in lock-step as one stacked computation.

Why: a child step on a small model is mostly Python and dispatch overhead (forward,
backward and ~80 optimizer kernel launches). Stacking K children turns K small steps into
one step of batched kernels (``torch.func.vmap`` over ``functional_call`` for any model, or
hand-written ``torch.bmm`` for lrservice's MLP) and one optimizer update on a ``(K, P)`` tensor.

Any model ``torch.func`` can vmap batches: its parameters are stacked ``(K, ...)`` views of
one flat tensor, its buffers (BatchNorm's running statistics) are stacked ``(K, ...)`` too, so
each child's statistics are updated from its own batches in training mode and used in eval
mode. Whether a model batches is decided once, when the trainer is built, by a trial
forward+backward of two children under vmap on a few training samples, checked against the
model's own forward; a model that fails it (data-dependent control flow, ``.item()``, an op
without a batching rule, random ops such as dropout in training mode) raises
:class:`NotBatchable` with a one-line reason, and :func:`lrservice.child.pool.child_pool`
then trains separate children. Dropout is refused rather than batched: a separate child's
masks come from the global generator seeded at its reset, a batched child's would come from
another stream, and the pool's contract is that a batched child *is* the separate child.

Each child keeps what a separate ``ChildTrainer(task).reset(lr, seed)`` would have: the same
initial weights and buffers (built under ``torch.manual_seed(seed)``), the same batch order
(its own generator seeded ``seed + 1_000_003``), its own learning rate, its own optimizer state
(Adam updated element-wise exactly as ``torch.optim.Adam``'s single-tensor path does,
or SGD / SGD with momentum), and its own divergence flag. A child whose loss turns
non-finite stops updating (weights and optimizer state frozen, as ChildTrainer leaves
them; its running statistics keep the forward of that step, as ChildTrainer's do) while the
others go on; unlike ChildTrainer it stays diverged until it is reset.
No host synchronisation happens inside a block of steps on GPU.
"""

from __future__ import annotations

import copy
import math
import warnings
from typing import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from lrservice.child.batched_conv import batched_convolutions
from lrservice.child.data import ChildData
from lrservice.child.features import COLUMN, in_feature_order
from lrservice.child.models import MLP, task_model
from lrservice.child.observer import output_layer
from lrservice.child.trainer import EVAL_CHUNK, Evaluation, TrainResult, load_task_data, resolve_device, task_loss
from lrservice.config import ConfigError, TaskConfig

ADAM_BETAS = (0.9, 0.999)
ADAM_EPS = 1e-8
MODE_FAST = "batched (mlp fast path)"
MODE_VMAP = "batched (vmap)"
TRIAL_BATCH = 4     # samples per child in the vmap trial: enough for BatchNorm's batch statistics
TRIAL_RTOL = 1e-3   # the trial's agreement bound, relative to each tensor's largest magnitude (see _agrees)
_LAYOUT_WARNING = "grad and param do not obey the gradient layout contract"


def build_child(task: TaskConfig, input_shape: tuple[int, ...], num_classes: int) -> nn.Module:
    """The task's model (a built-in or a plugin, :func:`~lrservice.child.models.task_model`): the template and
    every child's initial weights."""
    return task_model(task, input_shape, num_classes)


class NotBatchable(Exception):
    """The model cannot be trained as vmapped children; ``reason`` is one line saying why."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


def _one_line(exc: BaseException, limit: int = 160) -> str:
    text = (str(exc).strip().splitlines() or [""])[0]
    text = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _agrees(got: torch.Tensor, ref: torch.Tensor) -> bool:
    """Equal for integer tensors; for floats within TRIAL_RTOL of the reference's largest magnitude
    (gradients are compared as one flat vector: a bias ahead of BatchNorm has a gradient that is
    rounding noise around 0, small only against the others).

    The bound only decides batched vs separate (a false "no" costs speed, never correctness):
    vmap turns a convolution into a grouped one, whose float32 rounding differs from the
    plain one by ~1e-6 relative, while a vmapped forward that computes something else
    differs by O(1). The equivalence tests pin the batched trajectories far tighter.
    """
    if got.shape != ref.shape:
        return False
    if not ref.is_floating_point():
        return torch.equal(got, ref)
    scale = float(ref.detach().abs().max()) if ref.numel() else 0.0
    return bool(torch.allclose(got.detach(), ref.detach(), rtol=0.0, atol=TRIAL_RTOL * scale + 1e-12,
                               equal_nan=True))


class _Stack:
    """K copies of one architecture's parameters in one ``(K, P)`` tensor, and its buffers ``(K, ...)``.

    Each named parameter is a ``(K, *shape)`` view into the flat tensor and a leaf that
    requires grad; its ``.grad`` is a view into one flat gradient tensor, so backward
    accumulates straight into ``(K, P)`` and the optimizer is a handful of whole-tensor ops.
    MLP ``Linear`` weights are stored transposed ``(in, out)`` so forward and backward are
    plain ``bmm`` calls with no transposed copies. Buffers (e.g. BatchNorm running statistics)
    are one ``(K, *shape)`` tensor each, in their own dtype.
    """

    def __init__(self, template: nn.Module, k: int, device: torch.device, transpose: bool):
        named = list(template.named_parameters())
        self.names = [n for n, _ in named]
        self.native_shapes = [tuple(p.shape) for _, p in named]
        self.transposed = [transpose and p.dim() == 2 for _, p in named]
        self.shapes = [tuple(reversed(s)) if t else s for s, t in zip(self.native_shapes, self.transposed)]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.k = k
        self.flat = torch.zeros(k, sum(self.sizes), device=device)
        self.grad = torch.zeros_like(self.flat)
        self.params = self._views(self.flat)
        for p, g in zip(self.params, self._views(self.grad)):
            p.requires_grad_(True)
            p.grad = g
        self.buffers = {n: torch.zeros(k, *b.shape, dtype=b.dtype, device=device)
                        for n, b in template.named_buffers()}
        self.state_names = list(template.state_dict().keys())

    def _views(self, flat: torch.Tensor) -> list[torch.Tensor]:
        return [t.view(self.k, *s) for t, s in zip(flat.split(self.sizes, dim=1), self.shapes)]

    def by_name(self) -> dict[str, torch.Tensor]:
        return dict(zip(self.names, self.params))

    @torch.no_grad()
    def load_child(self, i: int, model: nn.Module) -> None:
        """Copy one built model's parameters and buffers into slot ``i``."""
        for p, (_, q), t in zip(self.params, model.named_parameters(), self.transposed):
            p[i].copy_(q.detach().t() if t else q.detach())
        for name, b in model.named_buffers():
            self.buffers[name][i].copy_(b)

    @torch.no_grad()
    def keep_buffers(self, updated: dict[str, torch.Tensor], mask: torch.Tensor) -> None:
        """Take the ``updated`` buffers of the children in ``mask``; the others keep theirs."""
        for name, new in updated.items():
            old = self.buffers[name]
            old.copy_(torch.where(mask.view(-1, *[1] * (old.dim() - 1)), new, old))

    @torch.no_grad()
    def state_dict(self, i: int) -> dict[str, torch.Tensor]:
        """Slot ``i`` as a state dict for the model ``build_child`` makes (its key order)."""
        entries = {n: (p[i].t() if t else p[i]) for n, p, t in zip(self.names, self.params, self.transposed)}
        entries.update({n: b[i] for n, b in self.buffers.items()})
        return {n: entries[n].detach().clone() for n in self.state_names if n in entries}

    def native(self, name: str) -> torch.Tensor:
        """A parameter in its ``nn.Module`` layout, ``(K, *shape)`` (a view, no copy)."""
        i = self.names.index(name)
        p = self.params[i]
        return p.transpose(1, 2) if self.transposed[i] else p


class BatchedChildTrainer:
    """Trains K children of one task together; every child has its own LR, seed and state.

    ``fast_path`` (default on) trains lrservice's own MLP with hand-written ``bmm`` calls
    instead of vmap (faster on CPU: docs/performance.md); any other model goes through vmap, its
    convolutions channels-last (``channels_last_conv``, default on: :mod:`lrservice.child.batched_conv`).
    Both switches exist so ``bench/batched.py`` can show each earns its keep.
    Raises :class:`NotBatchable` when the model cannot be vmapped (see the module docstring).
    """

    def __init__(self, task: TaskConfig, num_children: int, data: ChildData | None = None,
                 device: str | None = None, fast_path: bool = True, channels_last_conv: bool = True):
        if num_children < 1:
            raise ConfigError(f"num_children: {num_children!r} is not allowed; it must be an integer >= 1")
        self.task = task
        self._loss = task_loss(task)
        self.k = num_children
        self.device = resolve_device(device or task.device)
        self.data = (data or load_task_data(task)).to(self.device)
        self._template = build_child(task, self.data.input_shape, self.data.num_classes).to(self.device)
        self._is_mlp = fast_path and type(self._template) is MLP
        self.mode = MODE_FAST if self._is_mlp else MODE_VMAP
        self._train_x = self.data.train_x.flatten(1) if self._is_mlp else self.data.train_x
        self._head = self._head_name(self._template)
        if not self._is_mlp:
            # The vmapped copy computes its convolutions channels-last (lrservice.child.batched_conv); the
            # template itself stays as built, so the trial checks the copy against the model's own forward.
            self._vmapped = copy.deepcopy(self._template)
            if channels_last_conv:
                batched_convolutions(self._vmapped)
            self._fmodel = torch.func.vmap(self._functional, in_dims=(0, 0, 0))
            self._fmodel_shared = torch.func.vmap(self._functional, in_dims=(0, 0, None))
            self._vmap_trial()
        self.stack = _Stack(self._template, self.k, self.device, transpose=self._is_mlp)
        k, dev = self.k, self.device
        n = self.data.train_x.shape[0]
        self._exp_avg = torch.zeros_like(self.stack.flat)
        self._exp_avg_sq = torch.zeros_like(self.stack.flat)
        self._momentum_buf = torch.zeros_like(self.stack.flat)
        self._opt_steps = torch.zeros(k, dtype=torch.float64, device=dev)
        self._lrs = np.zeros(k, dtype=np.float64)
        self._lr_dev = torch.zeros(k, dtype=torch.float64, device=dev)
        self._alive = torch.zeros(k, dtype=torch.bool, device=dev)
        self._loss_sum = torch.zeros(k, dtype=torch.float64, device=dev)
        self._loss_count = torch.zeros(k, dtype=torch.int64, device=dev)
        self._orders = torch.zeros(k, n, dtype=torch.int64, device=dev)
        self._cursors = [n] * k  # an exhausted order: the first step shuffles
        self._gens = [torch.Generator() for _ in range(k)]
        self._prev_logits: torch.Tensor | None = None
        self._has_prev = torch.zeros(k, dtype=torch.bool, device=dev)
        self._steps = np.zeros(k, dtype=np.int64)
        self._seeded = np.zeros(k, dtype=bool)

    @staticmethod
    def _head_name(model: nn.Module) -> str:
        """The output layer's weight, by the observer's rule (:func:`output_layer`)."""
        head = output_layer(model)
        return next(f"{name}.weight" if name else "weight" for name, m in model.named_modules() if m is head)

    # -- the vmap trial --------------------------------------------------------------------
    def _vmap_trial(self) -> None:
        """Two children (the template's weights, and those scaled by 0.9) through one vmapped
        training forward+backward and one eval forward, each checked against the model's own
        forward on that child's weights: outputs, updated buffers and gradients must agree.
        Raises :class:`NotBatchable` with the first failure."""
        trial = _Stack(self._template, 2, self.device, transpose=False)
        trial.load_child(0, self._template)
        trial.load_child(1, self._template)
        with torch.no_grad():
            trial.flat[1].mul_(0.9)
        n = self.data.train_x.shape[0]
        b = max(1, min(self.task.batch_size, TRIAL_BATCH, n // 2 if n >= 2 else 1))
        idx = torch.stack([torch.arange(b), torch.arange(b, 2 * b) % n]).to(self.device)
        x, y = self._train_x[idx], self.data.train_y[idx]
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_LAYOUT_WARNING)
                self._modes(train=True)
                buffers = {n_: t.clone() for n_, t in trial.buffers.items()}
                out = self._fmodel(trial.by_name(), buffers, x)
                self._losses(out, y).sum().backward()
                for i in range(2):
                    params = {n_: p[i].detach().clone().requires_grad_(True) for n_, p in trial.by_name().items()}
                    own_buffers = {n_: t[i].clone() for n_, t in trial.buffers.items()}
                    ref = torch.func.functional_call(self._template, (params, own_buffers), (x[i],))
                    self._losses(ref.unsqueeze(0), y[i:i + 1]).sum().backward()
                    if not _agrees(out[i], ref):
                        raise NotBatchable("vmapped training outputs differ from the model's own forward")
                    if not all(_agrees(buffers[n_][i], own_buffers[n_]) for n_ in buffers):
                        raise NotBatchable("vmapped buffer updates differ from the model's own forward")
                    own_grads = [torch.zeros_like(q) if q.grad is None else q.grad for q in params.values()]
                    if not _agrees(trial.grad[i], torch.cat([g.flatten() for g in own_grads])):
                        raise NotBatchable("vmapped gradients differ from the model's own backward")
                self._modes(train=False)
                with torch.no_grad():
                    out = self._fmodel_shared(trial.by_name(), trial.buffers, x[0])
                    for i in range(2):
                        params = {n_: p[i] for n_, p in trial.by_name().items()}
                        own_buffers = {n_: t[i].clone() for n_, t in trial.buffers.items()}
                        ref = torch.func.functional_call(self._template, (params, own_buffers), (x[0],))
                        if not _agrees(out[i], ref):
                            raise NotBatchable("vmapped eval outputs differ from the model's own forward")
        except NotBatchable:
            raise
        except Exception as exc:  # whatever vmap cannot do: the pool trains separate children instead
            raise NotBatchable(_one_line(exc)) from exc

    # -- lifecycle -------------------------------------------------------------------------
    def reset(self, lrs: Sequence[float] | float, seeds: Sequence[int] | None = None) -> None:
        """Fresh weights and optimizer state for every child (seeds default to task.seed + i)."""
        lrs = np.broadcast_to(np.asarray(lrs, dtype=np.float64), (self.k,))
        seeds = [self.task.seed + i for i in range(self.k)] if seeds is None else list(seeds)
        if len(seeds) != self.k:
            raise ValueError(f"seeds: expected {self.k} seeds, got {len(seeds)}")
        for i in range(self.k):
            self.reset_child(i, float(lrs[i]), int(seeds[i]))

    @torch.no_grad()
    def reset_child(self, i: int, lr: float, seed: int) -> None:
        """Child ``i`` starts over exactly as ``ChildTrainer.reset(lr, seed)`` would."""
        torch.manual_seed(seed)
        model = build_child(self.task, self.data.input_shape, self.data.num_classes)
        self.stack.load_child(i, model)
        for state in (self._exp_avg, self._exp_avg_sq, self._momentum_buf):
            state[i].zero_()
        self._opt_steps[i] = 0
        self._gens[i].manual_seed(seed + 1_000_003)
        self._cursors[i] = self._orders.shape[1]
        self._alive[i] = True
        self._loss_sum[i] = 0
        self._loss_count[i] = 0
        self._has_prev[i] = False
        self._steps[i] = 0
        self._seeded[i] = True
        self.set_lr(i, lr)

    # -- learning rates --------------------------------------------------------------------
    @property
    def lrs(self) -> np.ndarray:
        return self._lrs.copy()

    @lrs.setter
    def lrs(self, values: Sequence[float] | float) -> None:
        self._lrs[:] = np.broadcast_to(np.asarray(values, dtype=np.float64), (self.k,))
        self._lr_dev.copy_(torch.from_numpy(self._lrs))

    def set_lr(self, i: int, value: float) -> None:
        self._lrs[i] = float(value)
        self._lr_dev[i] = float(value)

    # -- state -----------------------------------------------------------------------------
    @property
    def diverged(self) -> np.ndarray:
        return ~self._alive.cpu().numpy()

    @property
    def step(self) -> np.ndarray:
        """Optimizer steps taken by each child since its reset."""
        return self._steps.copy()

    def head_weights(self) -> torch.Tensor:
        """The output layer's weights (:func:`output_layer`), ``(K, *shape)`` as in the module."""
        return self.stack.native(self._head).detach()

    def child_state_dict(self, i: int) -> dict[str, torch.Tensor]:
        return self.stack.state_dict(i)

    _STATE = ("_exp_avg", "_exp_avg_sq", "_momentum_buf", "_opt_steps", "_lr_dev", "_alive", "_loss_sum",
              "_loss_count", "_orders", "_has_prev")

    @torch.no_grad()
    def state_dict(self) -> dict:
        """Everything needed to continue all K children exactly (weights, buffers, optimizer state,
        batch orders, generators, observation state): what a checkpoint of a batched trial holds."""
        state = {name: getattr(self, name).detach().cpu().clone() for name in self._STATE}
        state.update({"flat": self.stack.flat.detach().cpu().clone(),
                      "buffers": {n: b.cpu().clone() for n, b in self.stack.buffers.items()},
                      "lrs": self._lrs.copy(), "cursors": list(self._cursors), "steps": self._steps.copy(),
                      "seeded": self._seeded.copy(), "gens": [g.get_state() for g in self._gens],
                      "prev_logits": None if self._prev_logits is None else self._prev_logits.cpu().clone()})
        return state

    @torch.no_grad()
    def load_state_dict(self, state: dict) -> None:
        """Continue from :meth:`state_dict` of a trainer of the same task and K."""
        for name in self._STATE:
            getattr(self, name).copy_(state[name])
        self.stack.flat.copy_(state["flat"])
        for n, b in state["buffers"].items():
            self.stack.buffers[n].copy_(b)
        self._lrs[:] = state["lrs"]
        self._cursors = list(state["cursors"])
        self._steps[:] = state["steps"]
        self._seeded[:] = state["seeded"]
        for g, s in zip(self._gens, state["gens"]):
            g.set_state(s)
        prev = state["prev_logits"]
        self._prev_logits = None if prev is None else prev.to(self.device)

    def child_model(self, i: int) -> nn.Module:
        """Child ``i`` as an ordinary ``nn.Module`` (a copy) on this trainer's device."""
        model = build_child(self.task, self.data.input_shape, self.data.num_classes).to(self.device)
        model.load_state_dict(self.child_state_dict(i))
        return model

    # -- forward ---------------------------------------------------------------------------
    def _functional(self, params: dict[str, torch.Tensor], buffers: dict[str, torch.Tensor],
                    x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self._vmapped, (params, buffers), (x,))

    def _modes(self, train: bool) -> None:
        """Training or eval mode (BatchNorm's batch or running statistics) for the template and its vmapped copy."""
        self._template.train(train)
        self._vmapped.train(train)

    def _forward(self, x: torch.Tensor, shared: bool = False,
                 buffers: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Logits ``(K, B, C)``; ``x`` is ``(K, B, ...)`` or, if ``shared``, ``(B, ...)`` for all.

        Training (not ``shared``) runs the model in training mode on ``buffers`` (copies the
        caller keeps or drops per child); evaluation runs it in eval mode on the stacked buffers.
        """
        if self._is_mlp:
            p = self.stack.params
            layers = list(zip(p[0::2], p[1::2]))
            h = x.flatten(1) if shared else x
            if shared:
                h = h.unsqueeze(0).expand(self.k, -1, -1)
            for j, (w, b) in enumerate(layers):
                h = torch.baddbmm(b.unsqueeze(1), h, w)
                if j < len(layers) - 1:
                    h = h.relu()
            return h
        self._modes(train=not shared)
        if shared:
            return self._fmodel_shared(self.stack.by_name(), self.stack.buffers, x)
        return self._fmodel(self.stack.by_name(), self.stack.buffers if buffers is None else buffers, x)

    def _losses(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """Each child's mean loss ``(K,)`` from outputs ``(K, B, C)`` and targets ``(K, B, ...)``: the one
        definition of the training and evaluation loss. Cross-entropy in one call; a plugin loss
        (``task.loss``) child by child, as a separate child computes it."""
        if self.task.loss != "cross_entropy":
            return torch.stack([self._loss(logits[i], y[i]) for i in range(logits.shape[0])])
        k, b = y.shape
        return F.cross_entropy(logits.flatten(0, 1), y.flatten(), reduction="none").view(k, b).mean(1)

    def _next_batch(self, chosen: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """Each chosen child's next batch from its own epoch order; others get a dummy batch."""
        n = self._orders.shape[1]
        size = min(self.task.batch_size, n)
        for i in chosen:
            if self._cursors[i] + size > n:
                self._orders[i] = torch.randperm(n, generator=self._gens[i]).to(self.device)
                self._cursors[i] = 0
        c = self._cursors[0]
        if all(ci == c for ci in self._cursors):
            idx = self._orders[:, c:c + size]
        else:
            idx = torch.stack([self._orders[i, min(ci, n - size):min(ci, n - size) + size]
                               for i, ci in enumerate(self._cursors)])
        for i in chosen:
            self._cursors[i] += size
        return self._train_x[idx], self.data.train_y[idx]

    # -- training --------------------------------------------------------------------------
    def train_steps(self, k: int, lrs: Sequence[float] | float | None = None,
                    children: Sequence[int] | None = None) -> list[TrainResult]:
        """Up to ``k`` steps for every live child; a child stops at its first non-finite loss.

        ``children`` limits the block to those children (default: all); the others are
        left exactly as they are (no step, no batch drawn) and report 0 steps.
        """
        if not self._seeded.all():
            raise RuntimeError("BatchedChildTrainer.reset(lrs) must be called before training")
        if lrs is not None:
            self.lrs = lrs
        sum_before = self._loss_sum.clone()
        count_before = self._loss_count.clone()
        chosen = torch.ones(self.k, dtype=torch.bool, device=self.device)
        if children is not None:
            chosen.zero_()
            chosen[list(children)] = True
        chosen_idx = range(self.k) if children is None else sorted(set(children))
        if not chosen_idx:
            k = 0
        on_cpu = self.device.type == "cpu"
        for _ in range(k):
            running = self._alive & chosen
            if on_cpu and not bool(running.any()):
                break
            x, y = self._next_batch(chosen_idx)
            buffers = {n: b.clone() for n, b in self.stack.buffers.items()}
            logits = self._forward(x, buffers=buffers)
            losses = self._losses(logits, y)
            self.stack.keep_buffers(buffers, running)  # ChildTrainer's forward updates them even as it diverges
            finite = torch.isfinite(losses.detach())
            update = running & finite
            self._alive &= finite | ~chosen
            self.stack.grad.zero_()
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=_LAYOUT_WARNING)
                torch.where(update, losses, 0.0).sum().backward()
            with torch.no_grad():
                self._optimizer_step(update)
                self._loss_sum += torch.where(update, losses.detach().double(), 0.0)
                self._loss_count += update
        taken = (self._loss_count - count_before).cpu().numpy()
        sums = (self._loss_sum - sum_before).cpu().numpy()
        self._steps += taken
        diverged = self.diverged
        return [TrainResult(mean_loss=float(sums[i] / taken[i]) if taken[i] else float("nan"),
                            steps=int(taken[i]), diverged=bool(diverged[i])) for i in range(self.k)]

    def _optimizer_step(self, update: torch.Tensor) -> None:
        """One update of every child with its own LR; children not in ``update`` stay as they are."""
        flat, mask = self.stack.flat, update.unsqueeze(1)
        grad = self.stack.grad
        if self.task.weight_decay:
            grad = grad.add(flat, alpha=self.task.weight_decay)
        if self.device.type != "cpu" or not bool(update.all()):
            grad = torch.where(mask, grad, 0.0)  # on CPU the check is free; on GPU it would sync
        self._opt_steps += update
        if self.task.optimizer == "adam":
            self._adam(flat, grad, mask)
            return
        momentum = self.task.momentum if self.task.optimizer == "momentum" else 0.0
        lr = torch.where(update, self._lr_dev, 0.0).to(flat.dtype).unsqueeze(1)
        if momentum:
            first = ((self._opt_steps == 1) & update).unsqueeze(1)
            buf = self._momentum_buf
            buf.copy_(torch.where(first, grad, torch.where(mask, buf * momentum + grad, buf)))
            grad = buf
        flat.sub_(lr * grad)

    def _adam(self, flat: torch.Tensor, grad: torch.Tensor, mask: torch.Tensor) -> None:
        """``torch.optim.Adam`` (single-tensor path), per child: bias corrections from its own step."""
        beta1, beta2 = ADAM_BETAS
        t = self._opt_steps.clamp_min(1)
        bc1 = 1 - beta1 ** t
        bc2_sqrt = (1 - beta2 ** t).sqrt()
        step_size = torch.where(mask.squeeze(1), -self._lr_dev / bc1, 0.0).to(flat.dtype).unsqueeze(1)
        w1 = torch.where(mask, 1 - beta1, 0.0).to(flat.dtype)
        b2 = torch.where(mask, beta2, 1.0).to(flat.dtype)
        self._exp_avg.lerp_(grad, w1)
        self._exp_avg_sq.mul_(b2).addcmul_(grad, grad, value=1 - beta2)
        denom = self._exp_avg_sq.sqrt().div_(bc2_sqrt.to(flat.dtype).unsqueeze(1)).add_(ADAM_EPS)
        flat.add_(torch.div(self._exp_avg, denom, out=denom).mul_(step_size))

    # -- evaluation ------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every child's logits on the same inputs: ``(K, N, C)``."""
        return torch.cat([self._forward(x[i:i + EVAL_CHUNK], shared=True)
                          for i in range(0, x.shape[0], EVAL_CHUNK)], dim=1)

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """See :meth:`ChildData.split`."""
        return self.data.split(name, self.task.val_subset)

    def _loss_acc(self, out: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-child loss and accuracy (NaN unless the task is classification) on shared targets ``y``."""
        loss = self._losses(out, y.expand(out.shape[0], *y.shape))
        if not self.task.is_classification:
            return loss, torch.full_like(loss, math.nan)
        return loss, (out.argmax(dim=2) == y).float().mean(1)

    def evaluate(self, split: str = "val") -> list[Evaluation]:
        """Mean cross-entropy and accuracy per child on a split."""
        x, y = self.split(split)
        loss, acc = self._loss_acc(self.logits(x), y)
        loss, acc = loss.cpu().numpy(), acc.cpu().numpy()
        return [Evaluation(loss=float(loss[i]), accuracy=float(acc[i])) for i in range(self.k)]

    @torch.no_grad()
    def observe(self, children: Sequence[int] | None = None) -> tuple[np.ndarray, list[Evaluation]]:
        """Features ``(K, NUM_FEATURES)`` (``FEATURE_NAMES`` order, float32) and each child's val-subset evaluation.

        Same definitions as ``ChildTrainer.observe``: train loss is the mean since the
        child's previous observation (its val loss if it took no step), prediction change
        is against its logits at that observation (against zero the first time).
        Only the ``children`` named (default: all) count this as their observation; rows
        of the others are returned but their observation state is left as it was.
        """
        x, y = self.split("val_subset")
        out = self.logits(x)
        val_loss, acc = self._loss_acc(out, y)
        if self._prev_logits is None:
            self._prev_logits = torch.zeros_like(out)
        prev = torch.where(self._has_prev.view(-1, 1, 1), self._prev_logits, 0.0)
        count = self._loss_count
        train_loss = torch.where(count > 0, self._loss_sum / count.clamp_min(1), val_loss.double())
        head = self.head_weights()
        feats = torch.stack(in_feature_order({
            "train_loss": train_loss.float(),
            "val_loss": val_loss,
            "pred_var": out.flatten(1).var(dim=1),
            "pred_change_var": (out - prev).flatten(1).var(dim=1),
            "head_weight_mean": head.flatten(1).mean(dim=1),
            "head_weight_var": head.flatten(1).var(dim=1),
            "lr": self._lr_dev.float(),
        }), dim=1)
        chosen = torch.ones(self.k, dtype=torch.bool, device=self.device)
        if children is not None:
            chosen.zero_()
            chosen[list(children)] = True
        self._prev_logits = torch.where(chosen.view(-1, 1, 1), out, self._prev_logits)
        self._has_prev |= chosen
        self._loss_sum.masked_fill_(chosen, 0)
        self._loss_count.masked_fill_(chosen, 0)
        self._alive &= torch.isfinite(val_loss) | ~chosen
        feats_np = feats.cpu().numpy().astype(np.float32)
        feats_np[:, COLUMN["lr"]] = self._lrs.astype(np.float32)
        loss_np, acc_np = val_loss.cpu().numpy(), acc.cpu().numpy()
        return feats_np, [Evaluation(loss=float(loss_np[i]), accuracy=float(acc_np[i])) for i in range(self.k)]
