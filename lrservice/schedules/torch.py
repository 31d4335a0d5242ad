"""Any zoo or composite policy as a ``torch.optim.lr_scheduler.LRScheduler``.

The scheduler sets every param group's ``lr`` to ``policy(last_epoch)``: an absolute
learning rate, not a multiplier of the optimizer's initial lr. Its state dict stores the
policy as a plain dict, so a fresh scheduler that loads it continues identically.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch.optim import Optimizer
from torch.optim.lr_scheduler import LRScheduler

from lrservice.schedules.compose import Composite, policy_from_dict
from lrservice.schedules.policies import Policy


class PolicyScheduler(LRScheduler):
    """``lr = policy(step)`` for every param group; call ``step()`` after ``optimizer.step()``.

    ``policy`` is a :class:`Policy`, a :class:`Composite`, or their ``to_dict()`` form.
    Constructing the scheduler sets the optimizer's lr to ``policy(0)``.
    """

    def __init__(self, optimizer: Optimizer, policy: Policy | Composite | Mapping[str, Any],
                 last_epoch: int = -1) -> None:
        self.policy = policy_from_dict(policy) if isinstance(policy, Mapping) else policy
        if not isinstance(self.policy, (Policy, Composite)):
            raise TypeError(f"policy: {policy!r} is not a Policy, Composite or policy dict")
        super().__init__(optimizer, last_epoch)

    def get_lr(self) -> list[float]:
        lr = self.policy(self.last_epoch)
        return [lr for _ in self.optimizer.param_groups]

    def _get_closed_form_lr(self) -> list[float]:
        return self.get_lr()

    def state_dict(self) -> dict[str, Any]:
        """Torch's scheduler state with the policy as its dict (no pickled objects)."""
        state = super().state_dict()
        state["policy"] = self.policy.to_dict()
        return state

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the step counter and the policy saved by :meth:`state_dict`."""
        state = dict(state_dict)
        state["policy"] = policy_from_dict(state["policy"])
        super().load_state_dict(state)
