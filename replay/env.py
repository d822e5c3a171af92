"""Gymnasium environments over the twin, for reinforcement-learning research.

`LineEnv` is one line; `LineVectorEnv` is N lines that are the N scenarios of one batched twin
(one kernel call per step). Actions are setpoint targets scaled to [-1, 1] that pass through
the real setpoint guard; observations are the surrogate's input features; the reward is the
profit rate over the decision step. `docs/replay.md` documents spaces, reward and seeding.
Gymnasium is an optional extra: `pip install 'linetwin[gym]'`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

try:
    import gymnasium
    from gymnasium import spaces
    from gymnasium.utils import seeding
    from gymnasium.vector import AutoresetMode, VectorEnv
except ImportError as exc:
    raise ImportError(
        "linetwin.replay.env needs Gymnasium, an optional extra: pip install 'linetwin[gym]'"
    ) from exc

from linetwin.replay.errors import ReplayError
from linetwin.replay.linecore import LineBatch, StepResult, resolve_line
from linetwin.twin.spec import LineSpec

ENV_ID = "linetwin/Line-v0"
"""Gymnasium id of `LineEnv` (and of `LineVectorEnv` through `gymnasium.make_vec`)."""

DEFAULT_DECISION_S = 60.0
DEFAULT_HORIZON_S = 8 * 3600.0

_KPI_KEYS = ("throughput_per_hour", "scrap_per_hour", "scrap_rate", "energy_kwh_per_hour")


def register_envs() -> None:
    """Register `ENV_ID` with Gymnasium (idempotent): `gymnasium.make(ENV_ID, line=...)`."""
    if ENV_ID not in gymnasium.registry:
        gymnasium.register(
            id=ENV_ID,
            entry_point="linetwin.replay.env:LineEnv",
            vector_entry_point="linetwin.replay.env:LineVectorEnv",
        )


def _spaces(core: LineBatch) -> tuple[spaces.Box, spaces.Box]:
    """Return the (observation, action) spaces of one line."""
    obs = spaces.Box(core.obs_low.astype(np.float32), core.obs_high.astype(np.float32))
    act = spaces.Box(-1.0, 1.0, (core.schema.n_setpoints,), dtype=np.float32)
    return obs, act


def _step_info(res: StepResult, time_s: float, steps: np.ndarray) -> dict[str, Any]:
    """Return the per-copy step info as arrays with a leading copy axis (fresh objects)."""
    k = res.kpis
    n = len(res.reasons)
    info: dict[str, Any] = {
        "time_s": np.full(n, time_s),
        "episode_step": steps.copy(),
        "profit_per_hour": res.reward.copy(),
        "oee": k.oee.copy(),
        "availability": k.availability.copy(),
        "utilisation": k.utilisation.copy(),
        "setpoints": res.setpoints.copy(),
        "target": res.target.copy(),
        "guard_fallback": res.fallback.copy(),
    }
    for key in _KPI_KEYS:
        info[key] = getattr(k, key).copy()
    reasons = np.empty(n, dtype=object)
    reasons[:] = res.reasons
    info["guard_reasons"] = reasons
    return info


class LineEnv(gymnasium.Env[np.ndarray, np.ndarray]):
    """One production line as a Gymnasium environment.

    `line`: a LineSpec or a bundled line name. Each step holds the action's setpoints (after
    the guard) for `decision_s` seconds of line time; an episode is truncated after
    `horizon_s` seconds (it never terminates). Spaces (see docs/replay.md): actions `(n_sp,)`
    float32 in [-1, 1], -1 the setpoint's lower limit and 1 its upper; observations `(n_obs,)`
    float32, the surrogate's state features then the setpoints in force. Reward: profit per
    hour over the step, in the spec's currency.
    """

    # Gymnasium declares `metadata` a (mutable) class attribute of every Env.
    metadata: dict[str, Any] = {"render_modes": []}  # noqa: RUF012

    def __init__(
        self,
        line: LineSpec | str = "example",
        *,
        decision_s: float = DEFAULT_DECISION_S,
        horizon_s: float = DEFAULT_HORIZON_S,
        render_mode: str | None = None,
    ) -> None:
        if render_mode is not None:
            raise ReplayError(
                f"LineEnv renders nothing; render_mode must be None, not {render_mode!r}"
            )
        self.line = resolve_line(line)
        self.core = LineBatch(self.line, 1, decision_s, horizon_s)
        self.observation_space, self.action_space = _spaces(self.core)

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start a new episode: an empty line at nominal setpoints at time 0.

        The twin draws its state, then its sensor-noise seed, from `self.np_random`, so the
        same seed gives the same episode bit for bit. `options` takes no keys.
        """
        super().reset(seed=seed)
        if options:
            raise ReplayError(f"LineEnv.reset takes no options, got {sorted(options)}")
        self.core.start([self.np_random], self.np_random)
        return self.core.observe()[0], {"time_s": 0.0, "setpoints": self.core.applied()[0]}

    def step(self, action: np.ndarray) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        """Send `action (n_sp,)` through the guard, run `decision_s`, return the outcome.

        Values outside [-1, 1] ask for setpoints outside the limits: the guard clamps them.
        Non-finite values make the guard reject the action and hold the setpoints.
        """
        a = self.core.check_actions(action, self.action_space.shape or ())
        res = self.core.step(a[None], np.ones(1, dtype=bool))
        info = {k: v[0] for k, v in _step_info(res, self.core.time_s, self.core.steps).items()}
        for key, value in info.items():  # scalars as Python numbers, arrays as fresh arrays
            if isinstance(value, np.generic):
                info[key] = value.item()
        return res.obs[0], float(res.reward[0]), False, bool(res.truncated[0]), info


class LineVectorEnv(VectorEnv[np.ndarray, np.ndarray, np.ndarray]):
    """`num_envs` copies of one line, the scenarios of one batched twin.

    Same spaces, reward and options as `LineEnv`, batched along a leading axis; one kernel call
    advances every copy. `autoreset_mode` (Gymnasium's, default NEXT_STEP): with NEXT_STEP the
    step after a copy's last returns its first observation, reward 0 and ignores its action;
    with SAME_STEP the last step returns the first observation of the next episode and puts
    the last one in `info["final_obs"]` / `info["final_info"]`; with DISABLED, reset ended
    copies with `reset(options={"reset_mask": mask})`. Restarted copies start at the twin's
    current time (the copies share one clock).
    """

    def __init__(
        self,
        num_envs: int = 1,
        line: LineSpec | str = "example",
        *,
        decision_s: float = DEFAULT_DECISION_S,
        horizon_s: float = DEFAULT_HORIZON_S,
        autoreset_mode: AutoresetMode | str = AutoresetMode.NEXT_STEP,
        render_mode: str | None = None,
    ) -> None:
        if isinstance(num_envs, bool) or not isinstance(num_envs, int) or num_envs < 1:
            raise ReplayError(f"num_envs must be a positive integer, got {num_envs!r}")
        if render_mode is not None:
            raise ReplayError(
                f"LineVectorEnv renders nothing; render_mode must be None, not {render_mode!r}"
            )
        try:
            self.autoreset_mode = AutoresetMode(autoreset_mode)
        except ValueError:
            modes = ", ".join(m.value for m in AutoresetMode)
            raise ReplayError(
                f"unknown autoreset_mode {autoreset_mode!r} (have: {modes})"
            ) from None
        self.metadata = {"render_modes": [], "autoreset_mode": self.autoreset_mode}
        self.num_envs = num_envs
        self.line = resolve_line(line)
        self.core = LineBatch(self.line, num_envs, decision_s, horizon_s)
        self.single_observation_space, self.single_action_space = _spaces(self.core)
        self.observation_space = spaces.Box(
            np.tile(self.single_observation_space.low, (num_envs, 1)),
            np.tile(self.single_observation_space.high, (num_envs, 1)),
        )
        self.action_space = spaces.Box(
            -1.0, 1.0, (num_envs, self.core.schema.n_setpoints), np.float32
        )
        self._rngs: list[np.random.Generator] | None = None
        self._ended = np.zeros(num_envs, dtype=bool)
        self._obs: np.ndarray | None = None  # the latest observations, for partial resets

    def _seeded(
        self, seed: int | Sequence[int | None] | None, rows: np.ndarray
    ) -> list[np.random.Generator]:
        """Give each copy in `rows` its Generator and return every copy's: copy i gets
        `seed + i` (Gymnasium's convention for vector seeds) or `seed[i]`; None continues."""
        if self._rngs is None:  # first use: one child per copy from the vector's Generator
            self._rngs = [
                seeding.np_random(int(self.np_random.integers(2**63)))[0]
                for _ in range(self.num_envs)
            ]
        if seed is None:
            return self._rngs
        seeds = [seed + i for i in range(self.num_envs)] if isinstance(seed, int) else list(seed)
        if len(seeds) != self.num_envs:
            raise ReplayError(f"{len(seeds)} seeds given for {self.num_envs} environments")
        for i in rows:
            s = seeds[i]
            if s is not None:
                self._rngs[i] = seeding.np_random(s)[0]
        return self._rngs

    def reset(
        self,
        *,
        seed: int | Sequence[int | None] | None = None,
        options: dict[str, Any] | None = None,
    ) -> tuple[np.ndarray, dict[str, Any]]:
        """Start every copy at time 0, or with `options={"reset_mask": mask}` only those.

        `seed`: an int (copy i gets `seed + i`, like `LineEnv.reset(seed=seed + i)`), a list
        of per-copy seeds, or None (each copy continues its Generator). The sensor noise of
        the batch comes from the vector's own Generator, seeded by an int seed.
        """
        options = dict(options or {})
        mask = options.pop("reset_mask", None)
        if options:
            raise ReplayError(f"unknown reset options {sorted(options)} (have: reset_mask)")
        if mask is None:
            if isinstance(seed, int) or seed is None:
                super().reset(seed=seed)
            elif all(s is not None for s in seed):  # a list of ints seeds the sensors too
                self.np_random = np.random.default_rng([int(s or 0) for s in seed])
            self.core.start(self._seeded(seed, np.arange(self.num_envs)), self.np_random)
            self._ended[:] = False
            self._obs = self.core.observe()
            return self._obs.copy(), self._reset_info(np.ones(self.num_envs, dtype=bool))
        mask = np.asarray(mask)
        if mask.shape != (self.num_envs,) or mask.dtype != bool or not mask.any():
            raise ReplayError(
                f"reset_mask must be a bool array of shape ({self.num_envs},) with a True, "
                f"got {mask!r}"
            )
        if self._obs is None:
            raise ReplayError("reset every environment once before resetting some of them")
        self._obs = self._restart(mask, self._obs, seed)
        return self._obs.copy(), self._reset_info(mask)

    def _restart(
        self,
        mask: np.ndarray,
        obs: np.ndarray,
        seed: int | Sequence[int | None] | None = None,
    ) -> np.ndarray:
        """Restart the copies in `mask`; return `obs` with their first observations."""
        rows = np.flatnonzero(mask)
        rngs = self._seeded(seed, rows)
        self.core.restart(rows, [rngs[i] for i in rows])
        self._ended[rows] = False
        return np.where(mask[:, None], self.core.observe(), obs)

    def _reset_info(self, rows: np.ndarray) -> dict[str, Any]:
        info: dict[str, Any] = {
            "time_s": np.full(self.num_envs, self.core.time_s),
            "setpoints": self.core.applied(),
        }
        for key in list(info):
            info[f"_{key}"] = rows.copy()
        return info

    def step(
        self, actions: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        """Send `actions (num_envs, n_sp)` through the guards, run `decision_s`, autoreset."""
        a = self.core.check_actions(actions, (self.num_envs, self.core.schema.n_setpoints))
        mode = self.autoreset_mode
        if mode == AutoresetMode.DISABLED and self._ended.any():
            raise ReplayError(
                f"environments {np.flatnonzero(self._ended).tolist()} ended; reset them with "
                "reset(options={'reset_mask': mask}) first (autoreset_mode is DISABLED)"
            )
        waiting = (
            self._ended.copy() if mode == AutoresetMode.NEXT_STEP else np.zeros_like(self._ended)
        )
        res = self.core.step(a, ~waiting)
        obs, reward, truncated = res.obs, res.reward.copy(), res.truncated.copy()
        info = _step_info(res, self.core.time_s, self.core.steps)
        valid = ~waiting
        if mode == AutoresetMode.SAME_STEP and truncated.any():
            final_obs = np.full(self.num_envs, None, dtype=object)
            for i in np.flatnonzero(truncated):
                final_obs[i] = obs[i].copy()
            final_info = {k: v.copy() for k, v in info.items()}
            for key in list(final_info):
                final_info[f"_{key}"] = truncated.copy()
            info["final_obs"], info["_final_obs"] = final_obs, truncated.copy()
            info["final_info"], info["_final_info"] = final_info, truncated.copy()
            obs = self._restart(truncated, obs)
            valid = ~truncated
        elif waiting.any():
            obs = self._restart(waiting, obs)
            reward[waiting] = 0.0
            truncated[waiting] = False
        for key in [k for k in info if not k.startswith(("_", "final"))]:
            info[f"_{key}"] = valid.copy()
        info["_time_s"] = np.ones(self.num_envs, dtype=bool)
        self._ended = (
            truncated.copy() if mode != AutoresetMode.SAME_STEP else np.zeros_like(truncated)
        )
        self._obs = obs
        return obs.copy(), reward, np.zeros(self.num_envs, dtype=bool), truncated, info
