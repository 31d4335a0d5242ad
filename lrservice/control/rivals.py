"""The rivals ``evaluate-controller`` tunes: constant, cosine and ``evaluate.rivals``. No torch.

A rival is an arm of a baseline kind (:func:`lrservice.kinds.baselines`) with a grid; every
grid point is checked against its kind before any work starts, with errors naming the
field of the ``evaluate`` section.
"""

from __future__ import annotations

from dataclasses import dataclass

from lrservice.config import ArmConfig, ConfigError, RunConfig
from lrservice.kinds import baselines, get_kind, grid_points


@dataclass(frozen=True)
class Rival:
    """A tuned rival: its name, kind and every grid point's params (task defaults filled in)."""

    name: str
    kind: str
    points: tuple[dict, ...]


def _arms(config: RunConfig) -> list[tuple[str, ArmConfig]]:
    ev = config.evaluate
    return [("evaluate.constant_grid", ArmConfig("constant", "constant", grid={"lr": list(ev.constant_grid)})),
            ("evaluate.cosine_grid", ArmConfig("cosine", "cosine", grid={"lr": list(ev.cosine_grid)})),
            *((f"evaluate.rivals[{i}]", arm) for i, arm in enumerate(ev.rivals))]


def check_rivals(config: RunConfig) -> None:
    """Every rival is a baseline kind and every grid point is valid for it (one line naming the field)."""
    for path, arm in _arms(config):
        kind = get_kind(arm.kind, f"{path}.kind")
        if not kind.baseline:
            raise ConfigError(f"{path}.kind: {arm.kind!r} is not allowed for a rival; choose a tuned baseline kind: "
                              f"{', '.join(baselines())}")
        for point in grid_points(arm.params, arm.grid):
            kind.validate(kind.resolve(point, config), path, config)


def rivals(config: RunConfig) -> list[Rival]:
    """Constant, cosine, then ``evaluate.rivals``, each with its resolved grid points."""
    out = []
    for _, arm in _arms(config):
        kind = get_kind(arm.kind)
        out.append(Rival(arm.name, arm.kind, tuple(kind.resolve(p, config) for p in grid_points(arm.params, arm.grid))))
    return out
