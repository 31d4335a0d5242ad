"""The one runner for scheduled children: K children of one task, each under its own arm.

A *child run* is ``(kind, params, seed)``: an arm kind from :mod:`lrservice.kinds`, its
resolved params (a PBT member's ``lr`` among them) and the seed that fixes the child's
initial weights and batch order. :class:`ScheduledChildren` trains K of them as one pool
(:func:`lrservice.child.pool.child_pool`: batched when the model passes the vmap trial,
else separate children) and is what every scheduled child in lrservice runs through:
compare's Tune trials (a trial is a batch of children), ``evaluate-controller``'s rivals
and recommend's trials.

How each child's LR is set, by its kind:

- a schedule kind: its step -> LR function (:meth:`ArmKind.lr_fn`, torch's own scheduler
  values) before every step;
- a learned controller (``kind.learned``): its decision at steps 0, N, 2N, ... below the run's
  length, from the child's 7 paper features (N = the controller's ``action_every``);
- PBT (``kind.population``): its member's ``lr``, changed only between checkpoints;
- an optimizer-level kind (Schedule-Free AdamW, Prodigy): its own optimizer and torch
  scheduler; such children run as separate children (batched pools implement Adam and SGD).

Rows and metrics have one definition here: :meth:`ScheduledChildren.advance` trains to the next
report step (every ``task.eval_every`` steps) and gives each child's row there
(:meth:`~ScheduledChildren.rows`: mean train loss since its previous row, loss and accuracy on
the whole validation split, the LR its last step used, its share of the pool's training
seconds), a stopped child's with :meth:`~ScheduledChildren.final`'s metrics (test loss and
accuracy, LRBench's utility, cost and robustness numbers). A child that diverges stops and reports its
final metrics at the row where it stopped; the others go on. :meth:`state_dict` holds every
child, so a checkpoint of a batched trial restores all its children exactly.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import numpy as np
import torch

from lrservice.child.data import ChildData
from lrservice.child.pool import ChildPool, SeparateChildren, child_pool
from lrservice.child.trainer import load_task_data, task_loss
from lrservice.config import TaskConfig
from lrservice.kinds import get_kind
from lrservice.recommend.metrics import cost, loss_gap, utility


@dataclass(frozen=True)
class ChildRun:
    """One child: its arm kind, resolved params and seed."""

    kind: str
    params: Mapping[str, Any]
    seed: int
    lr_fn: Callable[[int], float] | None = None  # a schedule given as a function (experiments): replaces the kind's


@dataclass
class _History:
    """What a child has reported so far (for LRBench's cost: steps and seconds to the target)."""

    steps: list = field(default_factory=list)
    accuracies: list = field(default_factory=list)
    seconds: list = field(default_factory=list)


class ScheduledChildren:
    """K child runs of one task trained together; see the module docstring."""

    def __init__(self, task: TaskConfig, runs: Sequence[ChildRun], data: ChildData | None = None,
                 device: str | None = None, controllers: dict[str, Any] | None = None,
                 trace_every: int = 0):
        """``controllers``: loaded controllers by checkpoint (each child gets its own copy); a learned
        kind's controller is loaded from its params otherwise. ``trace_every``: record the LR in force
        at steps 0, n, 2n, ... in :attr:`trace` (``(len, K)`` once trained; 0: no trace)."""
        if not runs:
            raise ValueError("ScheduledChildren: give at least one child run")
        self.task, self.runs, self.k = task, list(runs), len(runs)
        self.kinds = [get_kind(r.kind) for r in self.runs]
        self.loss = task_loss(task)
        data = data or load_task_data(task)
        factories = [k.optimizer_factory(task, r.params) for k, r in zip(self.kinds, self.runs)]
        if any(f is not None for f in factories):  # an optimizer-level kind: its own optimizer per child
            self.pool: ChildPool = SeparateChildren(task, self.k, data=data, device=device,
                                                    reason="an optimizer-level arm kind")
        else:
            self.pool = child_pool(task, self.k, data=data, device=device)
        self.mode = self.pool.mode
        self._factories = factories
        self._fns = [self._schedule(k, r, f) for k, r, f in zip(self.kinds, self.runs, factories)]
        self.trace_every = int(trace_every)
        protos = controllers if controllers is not None else {}  # a caller's cache is filled as controllers load
        self.controllers: list[Any] = []
        for kind, run in zip(self.kinds, self.runs):
            if not kind.learned:
                self.controllers.append(None)
                continue
            key = str(run.params.get("checkpoint"))
            if key not in protos:
                protos[key] = kind.controller(run.params)
            self.controllers.append(copy.deepcopy(protos[key]))
        self._every = sorted({int(c.action_every) for c in self.controllers if c is not None})
        self.schedulers: list[Any] = [None] * self.k
        self.reset()

    def _schedule(self, kind, run: ChildRun, factory) -> Callable[[int], float] | None:
        """The child's step -> LR function, or None where the LR is set otherwise (a controller's decisions,
        PBT's member LR, an optimizer-level kind's own scheduler)."""
        if run.lr_fn is not None:
            return run.lr_fn
        if kind.learned or kind.population or factory is not None:
            return None
        return kind.lr_fn(run.params, self.task.steps)

    # -- lifecycle -------------------------------------------------------------------------
    def reset(self) -> None:
        """Every child from its seed's initial weights; controllers decide at step 0."""
        for i, (kind, run) in enumerate(zip(self.kinds, self.runs)):
            lr = kind.initial_lr(run.params)
            if isinstance(self.pool, SeparateChildren):
                self.pool.reset_child(i, lr, int(run.seed), optimizer_factory=self._factories[i])
                if self._factories[i] is not None:
                    self.schedulers[i] = kind.scheduler(self.pool.children[i].optimizer, run.params)
            else:
                self.pool.reset_child(i, lr, int(run.seed))
            if self.controllers[i] is not None:  # a new run: no level or first validation loss kept
                self.controllers[i].reset()
        self.stopped = np.zeros(self.k, dtype=bool)  # diverged, or finished the run
        self.final_step = np.full(self.k, -1, dtype=np.int64)  # the row step at which a child stopped
        self.elapsed = 0.0  # training seconds of the pool; each child's share is elapsed / K
        self.last_lr = np.array([self._lr_at(i, 0) for i in range(self.k)], dtype=np.float64)
        self._loss_sum = np.zeros(self.k)
        self._loss_count = np.zeros(self.k, dtype=np.int64)
        self.history = [_History() for _ in range(self.k)]
        self._trace: list[np.ndarray] = []
        self._act(0)

    def _lr_at(self, i: int, step: int) -> float:
        fn = self._fns[i]
        return float(fn(step)) if fn is not None else float(self.pool.lrs[i])

    @property
    def device(self) -> str:
        """Where the children train (``task.device``: ``auto`` is CUDA when the process sees a GPU)."""
        pool = self.pool
        return str(pool.device if hasattr(pool, "device") else pool.children[0].device)

    @property
    def step(self) -> int:
        """Steps taken by the children still training (the pool's clock)."""
        steps = self.pool.step
        live = ~self.stopped
        return int(steps[live].max()) if live.any() else int(steps.max())

    @property
    def done(self) -> bool:
        return bool(self.stopped.all())

    # -- training --------------------------------------------------------------------------
    def set_lr(self, i: int, value: float) -> None:
        """Child ``i``'s LR from now on (PBT: a member continues another's weights at its own LR)."""
        self.pool.set_lr(i, float(value))

    def _live(self) -> list[int]:
        diverged = self.pool.diverged
        return [i for i in range(self.k) if not self.stopped[i] and not diverged[i]]

    def _act(self, step: int) -> None:
        """Controllers whose decision step this is observe their child and set its next LR."""
        if not self._every or step >= self.task.steps:
            return
        due = [i for i in self._live() if self.controllers[i] is not None
               and step % int(self.controllers[i].action_every) == 0]
        if not due:
            return
        features, _ = self.pool.observe(children=due)
        for i in due:
            lr = self.controllers[i].next_lr(features[i], float(self.pool.lrs[i]), step / self.task.steps)
            self.pool.set_lr(i, lr)

    def _block(self, step: int, until: int) -> int:
        """How many steps from ``step`` share one LR for every child (1 when a schedule moves each step)."""
        if any(self._fns[i] is not None or self.schedulers[i] is not None for i in self._live()):
            return 1
        ahead = [until] + [(step // n + 1) * n for n in self._every]
        return max(1, min(ahead) - step)

    def train_to(self, until: int) -> None:
        """Train every live child to step ``until`` (or its divergence); controllers act on the way."""
        started = time.perf_counter()
        step = self.step
        while step < until:
            live = self._live()
            if not live:
                break
            n = min(self._block(step, until), until - step)
            lrs = self.pool.lrs
            for i in live:
                if self._fns[i] is not None:
                    lrs[i] = self._fns[i](step)
            results = self.pool.train_steps(n, lrs=lrs, children=live)
            if self.trace_every:  # the LR each child's step used: a schedule's value, or what its optimizer says
                self._trace.extend(np.array([self._reported_lr(i, t) if i in live else np.nan for i in range(self.k)])
                                   for t in range(step, step + n) if t % self.trace_every == 0)
            for i in live:
                r = results[i]
                if r.steps:
                    self._loss_sum[i] += r.mean_loss * r.steps
                    self._loss_count[i] += r.steps
                    self.last_lr[i] = self._reported_lr(i, step + r.steps - 1)
                if self.schedulers[i] is not None:
                    for _ in range(r.steps):
                        self.schedulers[i].step()
            step += n
            self._act(step)
        self.elapsed += time.perf_counter() - started

    def _reported_lr(self, i: int, step: int) -> float:
        """The LR child ``i``'s step ``step`` used (an optimizer-level kind says what its step size was)."""
        if self._factories[i] is not None:
            return self.kinds[i].reported_lr(self.pool.children[i].optimizer)
        return self._lr_at(i, step) if self._fns[i] is not None else float(self.pool.lrs[i])

    @property
    def trace(self) -> np.ndarray:
        """The LR in force at steps 0, ``trace_every``, ... (rows) for each child (columns); NaN once stopped."""
        return np.asarray(self._trace, dtype=np.float64).reshape(-1, self.k)

    # -- rows and metrics ------------------------------------------------------------------
    def rows(self) -> list[dict | None]:
        """Each child's row now (None for a child that stopped at an earlier row); see the module docstring.

        A child whose loss turned non-finite, or that reached ``task.steps``, is stopped here
        (``row["stopped"]``) and its next :meth:`final` is its last word.
        """
        steps, diverged = self.pool.step, self.pool.diverged
        val = self.pool.evaluate("val")
        out: list[dict | None] = []
        for i in range(self.k):
            if self.stopped[i]:
                out.append(None)
                continue
            bad = bool(diverged[i]) or not math.isfinite(val[i].loss)
            count = self._loss_count[i]
            share = self.elapsed / self.k
            row = {"step": int(steps[i]), "train_loss": float(self._loss_sum[i] / count) if count else math.nan,
                   "val_loss": val[i].loss, "val_accuracy": val[i].accuracy, "lr": float(self.last_lr[i]),
                   "elapsed_s": share, "diverged": bad}
            self._loss_sum[i], self._loss_count[i] = 0.0, 0
            h = self.history[i]
            h.steps.append(int(steps[i]))
            h.accuracies.append(val[i].accuracy)
            h.seconds.append(share)
            if bad or steps[i] >= self.task.steps:
                self.stopped[i] = True
                self.final_step[i] = int(steps[i])
                row["stopped"] = True
            out.append(row)
        return out

    def advance(self, target: float, every: int | None = None) -> tuple[int, list[dict | None]]:
        """Train to the next report step (a multiple of ``every``, default ``task.eval_every``, at most
        ``task.steps``); returns that step and each child's row there, the row of a child that stopped
        there with ``final=True`` and :meth:`final`'s metrics (None for children stopped earlier)."""
        every = int(every or self.task.eval_every)
        at = min(self.task.steps, (self.step // every + 1) * every)
        self.train_to(at)
        rows = self.rows()
        finals = self.final([i for i, row in enumerate(rows) if row is not None and row.pop("stopped", False)],
                            target)
        return at, [None if row is None else {**row, "final": i in finals, **finals.get(i, {})}
                    for i, row in enumerate(rows)]

    def final(self, children: Sequence[int], target: float) -> dict[int, dict]:
        """Final metrics of ``children`` (each stopped): test metrics, LRBench utility / cost / robustness.

        ``train_eval_loss`` is the loss on the whole train split (the gap's train side; recommend
        reports it, compare's tables leave it out)."""
        if not children:
            return {}
        children = list(children)
        x, y = self.pool.split("test")
        logits = self.pool.logits(x)
        tx, ty = self.pool.split("train")
        train_logits = self.pool.logits(tx)
        diverged = self.pool.diverged
        nan = math.nan
        out = {}
        for i in children:
            test_loss = float(self.loss(logits[i], y))
            finite = math.isfinite(test_loss) and bool(logits[i].isfinite().all())
            util = utility(logits[i], y) if finite and self.task.is_classification else {}
            util = {k: (nan if v is None else v) for k, v in util.items()}  # e.g. nothing correct: no confidence
            train_loss = float(self.loss(train_logits[i], ty)) if finite else nan
            h = self.history[i]
            reached = cost(h.steps, h.accuracies, h.seconds, target)
            out[i] = {
                "steps_done": int(self.pool.step[i]),
                "diverged": bool(diverged[i] or not finite or self.final_step[i] < self.task.steps),
                "test_loss": test_loss if finite else nan,
                "test_accuracy": float(util.get("top1", nan)),
                "top5_accuracy": float(util.get("top5", nan)),
                "conf_mean_correct": float(util.get("conf_mean_correct", nan)),
                "conf_std_correct": float(util.get("conf_std_correct", nan)),
                "class_conf_spread": float(util.get("class_conf_spread", nan)),
                "train_eval_loss": train_loss,
                "train_test_loss_gap": float(loss_gap(train_loss, test_loss)) if finite else nan,
                "steps_to_target": reached["steps_to_target"],
                "seconds_to_target": reached["seconds_to_target"],
                "target_accuracy": float(target),
            }
        return out

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Every child's state (pool, schedulers, controllers' run state) and the runner's own bookkeeping."""
        return {"pool": self.pool.state_dict(), "lrs": self.pool.lrs,
                "schedulers": [None if s is None else s.state_dict() for s in self.schedulers],
                "controllers": [None if c is None else c.run_state() for c in self.controllers],
                "stopped": self.stopped.copy(), "final_step": self.final_step.copy(), "elapsed": self.elapsed,
                "last_lr": self.last_lr.copy(), "loss_sum": self._loss_sum.copy(),
                "loss_count": self._loss_count.copy(), "history": [vars(h) for h in self.history],
                "trace": list(self._trace),
                "torch_rng": torch.get_rng_state()}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Continue from :meth:`state_dict` of a runner of the same child runs."""
        self.pool.load_state_dict(state["pool"])
        self.pool.lrs = state["lrs"]
        for s, saved in zip(self.schedulers, state["schedulers"]):
            if s is not None and saved is not None:
                s.load_state_dict(saved)
        saved_runs = state.get("controllers") or [  # a checkpoint from before run_state kept levels only
            None if level is None else {"level": level, "first_val_loss": None} for level in state["levels"]]
        for c, saved in zip(self.controllers, saved_runs):
            if c is not None and saved is not None:
                c.load_run_state(saved)
        self.stopped = np.asarray(state["stopped"], dtype=bool).copy()
        self.final_step = np.asarray(state["final_step"], dtype=np.int64).copy()
        self.elapsed = float(state["elapsed"])
        self.last_lr = np.asarray(state["last_lr"], dtype=np.float64).copy()
        self._loss_sum = np.asarray(state["loss_sum"], dtype=np.float64).copy()
        self._loss_count = np.asarray(state["loss_count"], dtype=np.int64).copy()
        self.history = [_History(**h) for h in state["history"]]
        self._trace = list(state.get("trace", []))
        torch.set_rng_state(state["torch_rng"])


@dataclass(frozen=True)
class ChildrenResult:
    """What :func:`run_children` returns: each child's rows, its final row, and the LR trace."""

    rows: list[list[dict]]
    finals: list[dict]  # each child's last row, with final()'s metrics (``val_loss``: the final one)
    trace: np.ndarray  # ``(steps / trace_every, K)``: the LR each child's step 0, n, 2n, ... used (NaN once stopped)
    mode: str  # the pool's mode (batched or separate, and why)


def run_children(task: TaskConfig, runs: Sequence[ChildRun], data: ChildData | None = None,
                 target: float = 1.0, device: str | None = None, eval_every: int | None = None,
                 trace_every: int = 0, controllers: dict[str, Any] | None = None) -> ChildrenResult:
    """Train ``runs`` to the end in one pool, without Ray (a row every ``eval_every`` steps, default
    ``task.eval_every``; ``task.steps``: only the final row)."""
    runner = ScheduledChildren(task, runs, data=data, device=device, trace_every=trace_every,
                               controllers=controllers)
    rows: list[list[dict]] = [[] for _ in runs]
    while not runner.done:
        for i, row in enumerate(runner.advance(target, eval_every)[1]):
            if row is not None:
                rows[i].append(row)
    return ChildrenResult(rows, [r[-1] for r in rows], runner.trace, runner.mode)
