"""EpisodeBatch: K learning-rate-control episodes over child pools — the one env implementation.

Both gymnasium envs (:class:`~lrservice.control.env.LRControlEnv`, K=1, and
:class:`~lrservice.control.vector_env.LRVectorEnv`) and controller evaluation are thin
adapters around this class, so they cannot drift apart. An episode is one child run of its
task's ``steps``; every ``action_every`` steps (the last block shortened to what is left)
the agent sees the child's features and scales the LR — or, with an envelope, a level the
envelope multiplies (rules in :mod:`lrservice.control.actions`).

Tasks: with ``controller.tasks`` each env draws its task per episode — round-robin fixed
per env when there are at least as many envs as tasks (no batched child idles), uniformly
per episode otherwise. Twins (``baseline: twin``): every env's child has a reference
child in the same pool, reset with the same seed (so the same initial weights and batch
order) and trained under the reference schedule, sampled at the start of each block as the
controller's own LR is; the reward subtracts the twin's. Twins double the child steps spent.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np

from lrservice.child.data import ChildData
from lrservice.child.features import feature_set, val_loss_of
from lrservice.child.pool import ChildPool, child_pool
from lrservice.config import ControllerConfig, TaskConfig
from lrservice.control.actions import (
    draw_start,
    episode_tasks,
    finite_features,
    lr_in_force,
    next_lr,
    observed_level,
    step_reward,
)
from lrservice.schedules import policy_from_dict

PoolFactory = Callable[[TaskConfig, int], ChildPool]


class EpisodeBatch:
    """K episodes (env index ``i``), each a child in the pool of its current task."""

    def __init__(self, task: TaskConfig, controller: ControllerConfig, num_envs: int,
                 pool_factory: PoolFactory | None = None, data_for: Callable[[TaskConfig], ChildData] | None = None,
                 seed: int | None = None):
        self.controller, self.n = controller, int(num_envs)
        self.tasks = episode_tasks(task, controller)
        self.twin = controller.baseline == "twin"
        self.round_robin = self.n >= len(self.tasks)
        self.rng = np.random.default_rng(seed)
        self._twin_policy = policy_from_dict(controller.twin_policy) if controller.twin_policy else None
        # slot[t][i]: env i's child index in task t's pool (its twin is slot + controlled[t]).
        self.controlled = []
        self.slot: list[dict[int, int]] = []
        for t in range(len(self.tasks)):
            envs = [i for i in range(self.n) if i % len(self.tasks) == t] if self.round_robin else list(range(self.n))
            self.slot.append({i: j for j, i in enumerate(envs)})
            self.controlled.append(len(envs))
        make = pool_factory or (lambda tk, k: child_pool(tk, k, data=data_for(tk) if data_for else None))
        self.pools = [make(tk, m * (2 if self.twin else 1)) if m else None
                      for tk, m in zip(self.tasks, self.controlled)]
        n = self.n
        self.task_of = np.array([i % len(self.tasks) if self.round_robin else 0 for i in range(n)])
        self.level = np.zeros(n)  # what actions move: the LR itself without an envelope
        self.lr = np.zeros(n)  # the LR in force: the level under the envelope from the current block's start
        self.initial_lr = np.zeros(n)
        self.child_seed = np.zeros(n, dtype=np.int64)
        self.prev_loss = np.zeros(n)
        self.first_val_loss = np.full(n, np.nan)  # the episode's step-0 validation loss (``anchored`` features)
        self.twin_prev_loss = np.full(n, np.nan)
        self.needs_reset = np.ones(n, dtype=bool)
        self.child_steps = 0  # every child step taken, twins included: the cost of training

    # -- where env i lives ---------------------------------------------------------------
    def _where(self, i: int) -> tuple[ChildPool, int, int | None]:
        t = int(self.task_of[i])
        s = self.slot[t][i]
        return self.pools[t], s, (s + self.controlled[t] if self.twin else None)

    def steps_of(self, i: int) -> int:
        return self.tasks[int(self.task_of[i])].steps

    def _in_force(self, i: int, level: float, step: int) -> float:
        """The LR env ``i``'s child trains with from ``step``: ``level`` under the envelope."""
        return lr_in_force(level, step / self.steps_of(i), self.controller)

    def _twin_lr(self, i: int, step: int) -> float:
        if self._twin_policy is None:  # the controller that always keeps
            return self._in_force(i, float(self.initial_lr[i]), step)
        return float(np.clip(self._twin_policy(step), self.controller.lr_min, self.controller.lr_max))

    # -- episodes ------------------------------------------------------------------------
    def start(self, i: int, initial_lr: float | None = None, child_seed: int | None = None,
              task: int | None = None) -> None:
        """Begin env ``i``'s next episode (fresh child, and twin, from one seed)."""
        lr, seed = draw_start(self.controller, self.rng)
        if not self.round_robin:
            self.task_of[i] = int(self.rng.integers(len(self.tasks))) if task is None else int(task)
        lr = float(lr if initial_lr is None else initial_lr)
        seed = int(seed if child_seed is None else child_seed)
        self.level[i], self.lr[i], self.initial_lr[i], self.child_seed[i] = lr, lr, lr, seed
        pool, s, twin = self._where(i)
        pool.reset_child(s, lr, seed)
        if twin is not None:
            pool.reset_child(twin, self._twin_lr(i, 0), seed)
        self.needs_reset[i] = False

    def reset(self, starts: Sequence[dict] | None = None) -> tuple[np.ndarray, dict]:
        """Start every env (``starts[i]`` may fix ``initial_lr``, ``child_seed``, ``task``); observe."""
        for i in range(self.n):
            self.start(i, **(starts[i] if starts else {}))
        obs, evals, twin_evals = self._observe()
        self.prev_loss[:] = [e.loss for e in evals]
        self.twin_prev_loss[:] = [np.nan if e is None else e.loss for e in twin_evals]
        return obs, self._infos(evals, twin_evals, None, np.zeros(self.n, dtype=bool))

    def step(self, actions, autoreset: bool = True) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
        """Act, train each running child one block, observe: ``(obs, rewards, terminated, infos)``.

        Envs whose episode ended last step start a new one (reward 0) when ``autoreset``;
        otherwise they are left exactly as they ended (evaluation reads their final state).
        """
        c = self.controller
        restarting = np.flatnonzero(self.needs_reset) if autoreset else np.array([], dtype=int)
        running = np.flatnonzero(~self.needs_reset)
        for i in restarting:
            self.start(int(i))
        for i in running:
            self.level[i] = next_lr(float(self.level[i]), actions[i], c, self.rng)
        train_loss = np.full(self.n, np.nan)
        for t, pool in enumerate(self.pools):
            if pool is None:
                continue
            steps = pool.step
            blocks: dict[int, list[int]] = {}
            for i in running:
                if self.task_of[i] != t:
                    continue
                _, s, twin = self._where(int(i))
                self.lr[i] = self._in_force(int(i), float(self.level[i]), int(steps[s]))
                pool.set_lr(s, float(self.lr[i]))
                if twin is not None:
                    pool.set_lr(twin, self._twin_lr(int(i), int(steps[s])))
                blocks.setdefault(min(c.action_every, self.tasks[t].steps - int(steps[s])), []).append(int(i))
            for block, envs in blocks.items():
                children = [self._where(i)[1] for i in envs] + [self._where(i)[2] for i in envs if self.twin]
                results = pool.train_steps(block, children=children)
                self.child_steps += sum(r.steps for r in results)
                for i in envs:
                    train_loss[i] = results[self._where(i)[1]].mean_loss
        obs, evals, twin_evals = self._observe()
        rewards = np.zeros(self.n)
        terminated = np.zeros(self.n, dtype=bool)
        diverged = np.zeros(self.n, dtype=bool)
        for i in running:
            pool, s, twin = self._where(int(i))
            diverged[i] = bool(pool.diverged[s])
            finished = int(pool.step[s]) >= self.steps_of(int(i))
            loss = evals[i].loss
            twin_loss = twin_prev = None
            if twin is not None:
                twin_prev = float(self.twin_prev_loss[i])
                # a diverged twin stops moving
                twin_loss = twin_evals[i].loss if np.isfinite(twin_evals[i].loss) else twin_prev
                self.twin_prev_loss[i] = twin_loss
            rewards[i] = step_reward(c, loss, float(self.prev_loss[i]), finished, diverged[i], twin_loss, twin_prev)
            self.prev_loss[i] = loss
            terminated[i] = finished or diverged[i]
        for i in restarting:
            self.prev_loss[i] = evals[i].loss
            if self.twin:
                self.twin_prev_loss[i] = twin_evals[i].loss
        self.needs_reset[running] = terminated[running]
        return obs, rewards, terminated, self._infos(evals, twin_evals, train_loss, diverged)

    # -- observation ---------------------------------------------------------------------
    def _observe(self):
        """Observe every pool once; each env's feature row (its task's progress) and evaluations.

        Only the children of envs now on a pool's task are observed: with fewer envs than tasks an
        env's slot in another task's pool may never have been started."""
        current: list[list[int]] = [[] for _ in self.pools]
        for i in range(self.n):
            _, s, twin = self._where(i)
            current[int(self.task_of[i])] += [s] if twin is None else [s, twin]
        per_pool = [None if p is None or not mine else p.observe(children=mine)
                    for p, mine in zip(self.pools, current)]
        rows, evals, twin_evals = [], [], []
        for i in range(self.n):
            t = int(self.task_of[i])
            feats, ev = per_pool[t]
            _, s, twin = self._where(i)
            step = int(self.pools[t].step[s])
            if step == 0:  # an episode's first observation: of the untrained child
                self.first_val_loss[i] = val_loss_of(feats[s])
            rows.append(feature_set(feats[s], step / self.tasks[t].steps, self.controller.features,
                                    observed_level(self.controller, self.level[i]), self.first_val_loss[i]))
            evals.append(ev[s])
            twin_evals.append(None if twin is None else ev[twin])
        return finite_features(np.stack(rows)), evals, twin_evals

    def _infos(self, evals, twin_evals, train_loss, diverged) -> dict:
        steps = np.array([int(self._where(i)[0].step[self._where(i)[1]]) for i in range(self.n)])
        infos = {"lr": self.lr.copy(), "level": self.level.copy(), "initial_lr": self.initial_lr.copy(),
                 "child_seed": self.child_seed.copy(), "task": self.task_of.copy(), "step": steps,
                 "val_loss": np.array([e.loss for e in evals]),
                 "val_accuracy": np.array([e.accuracy for e in evals]), "diverged": diverged}
        if train_loss is not None:  # none at a reset: no step taken yet
            infos["train_loss"] = train_loss
        if self.twin:
            infos["twin_val_loss"] = np.array([e.loss for e in twin_evals])
        return infos

    # -- evaluation ----------------------------------------------------------------------
    def evaluate(self, split: str) -> list:
        """Each env's controlled child on a whole split (``val`` or ``test``)."""
        per_pool = [None if p is None else p.evaluate(split) for p in self.pools]
        return [per_pool[int(self.task_of[i])][self._where(i)[1]] for i in range(self.n)]
