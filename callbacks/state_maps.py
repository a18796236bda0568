"""
2-D state maps: how a point (x, y) of a picture becomes an observation, for the landscapes of
:mod:`callbacks.landscape`.

A state map spans a rectangle of two state variables (Pendulum's angle and angular velocity) and turns a batch of
its points into the observations the env would emit there (``(cos theta, sin theta, theta_dot)``). Pendulum-v1 and
MountainCarContinuous-v0 are built in; register your own env's map with :func:`register_state_map`, for instance
in the module you pass to ``scripts/train.py --gym-packages``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from saving.errors import UserError

__all__ = ["NoStateMapError", "StateMap", "get_state_map", "register_state_map", "registered_state_maps"]


class NoStateMapError(UserError, KeyError):
    """No state map is registered for an env id (a user error: the message says how to register one)."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


@dataclass(frozen=True)
class StateMap:
    """
    A rectangle of two state variables and the observations they stand for.

    :param to_obs: (N, 2) array of points -> (N, *observation shape) array of observations, the raw ones the env
        emits (before any ``VecNormalize``)
    :param x_range: (low, high) of the first variable, the picture's horizontal axis
    :param y_range: (low, high) of the second variable, the vertical axis
    :param labels: axis labels
    :param from_obs: the inverse, (T, *observation shape) -> (T, 2), to draw an episode's trajectory on the map;
        ``None``: no trajectory
    """

    to_obs: Callable[[np.ndarray], np.ndarray]
    x_range: tuple[float, float]
    y_range: tuple[float, float]
    labels: tuple[str, str] = ("x", "y")
    from_obs: Callable[[np.ndarray], np.ndarray] | None = None

    @property
    def obs_shape(self) -> tuple[int, ...]:
        """The shape of one observation that ``to_obs`` makes (to check against a model's observation space)."""
        return self.to_obs(np.zeros((1, 2), dtype=np.float32)).shape[1:]

    def grid(self, resolution: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """
        The picture's grid: ``resolution`` values of each variable, ends included.

        :return: (x values, y values, points) where ``points[i * resolution + j] == (xs[j], ys[i])``, so that
            values computed for ``points`` reshape to an image of shape (resolution, resolution) whose row ``i``
            is ``ys[i]``
        """
        xs = np.linspace(*self.x_range, resolution, dtype=np.float32)
        ys = np.linspace(*self.y_range, resolution, dtype=np.float32)
        grid_x, grid_y = np.meshgrid(xs, ys)
        return xs, ys, np.stack([grid_x.ravel(), grid_y.ravel()], axis=1)


def _pendulum_obs(points: np.ndarray) -> np.ndarray:
    theta, theta_dot = points[:, 0], points[:, 1]
    return np.stack([np.cos(theta), np.sin(theta), theta_dot], axis=1).astype(np.float32)


def _pendulum_state(obs: np.ndarray) -> np.ndarray:
    return np.stack([np.arctan2(obs[:, 1], obs[:, 0]), obs[:, 2]], axis=1)


def _identity(points: np.ndarray) -> np.ndarray:
    return np.asarray(points, dtype=np.float32)


_STATE_MAPS: dict[str, StateMap] = {
    # theta = 0 is upright; 8 rad/s is the env's speed limit
    "Pendulum-v1": StateMap(
        _pendulum_obs,
        (-np.pi, np.pi),
        (-8.0, 8.0),
        ("\N{GREEK SMALL LETTER THETA} (rad, 0 = up)", "d\N{GREEK SMALL LETTER THETA}/dt (rad/s)"),
        _pendulum_state,
    ),
    # the observation is the state; the env's own bounds (the flag is at 0.45)
    "MountainCarContinuous-v0": StateMap(_identity, (-1.2, 0.6), (-0.07, 0.07), ("position", "velocity"), _identity),
}


def register_state_map(
    env_id: str,
    to_obs: Callable[[np.ndarray], np.ndarray],
    x_range: tuple[float, float],
    y_range: tuple[float, float],
    labels: tuple[str, str] = ("x", "y"),
    from_obs: Callable[[np.ndarray], np.ndarray] | None = None,
) -> StateMap:
    """
    Register (or replace) the state map of ``env_id``, so that landscapes can be drawn for it.

    :param env_id: the Gymnasium env id
    :param to_obs: (N, 2) points -> (N, *observation shape) raw observations
    :param x_range: (low, high) of the first variable
    :param y_range: (low, high) of the second variable
    :param labels: axis labels
    :param from_obs: observations -> (T, 2) points, to overlay an evaluation episode (optional)
    :return: the registered map
    """
    for name, (low, high) in (("x_range", x_range), ("y_range", y_range)):
        if not (np.isfinite(low) and np.isfinite(high) and low < high):
            raise ValueError(f"{name} must be (low, high) with finite low < high, got {(low, high)}")
    x_range, y_range = (float(x_range[0]), float(x_range[1])), (float(y_range[0]), float(y_range[1]))
    state_map = StateMap(to_obs, x_range, y_range, (str(labels[0]), str(labels[1])), from_obs)
    _STATE_MAPS[env_id] = state_map
    return state_map


def registered_state_maps() -> list[str]:
    """The env ids that have a state map."""
    return sorted(_STATE_MAPS)


def get_state_map(env_id: str) -> StateMap:
    """
    The state map of ``env_id``.

    :raises NoStateMapError: none is registered
    """
    if env_id not in _STATE_MAPS:
        raise NoStateMapError(
            f"no state map for {env_id} to draw landscapes on (there are maps for "
            f"{', '.join(registered_state_maps())}); register one with callbacks.state_maps.register_state_map, e.g. "
            "in a module given to --gym-packages"
        )
    return _STATE_MAPS[env_id]
