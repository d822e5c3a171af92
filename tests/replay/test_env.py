"""The Gymnasium environments over the twin: API conformance, seeding, the guard, the reward."""

from __future__ import annotations

import importlib
import re
import sys
from pathlib import Path

import gymnasium
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from gymnasium.vector import AutoresetMode

from linetwin.models.features import FeatureSchema
from linetwin.replay.env import ENV_ID, LineEnv, LineVectorEnv, register_envs
from linetwin.replay.errors import ReplayError
from linetwin.twin import layout as L
from linetwin.twin.kpi import window_kpis
from linetwin.twin.params import compile_params
from linetwin.twin.sim import Twin
from linetwin.twin.spec import bundled_spec

SPEC = bundled_spec("example")
PARAMS = compile_params(SPEC)
SCHEMA = FeatureSchema.from_spec(SPEC)
MAX_STEP = np.zeros((SPEC.n_stations, 2))  # rate limit per decision, kernel setpoint order
for _i, _st in enumerate(SPEC.stations):
    MAX_STEP[_i, L.S_SPEED] = _st.setpoints.speed.max_step
    if _st.setpoints.temperature is not None:
        MAX_STEP[_i, L.S_TEMP] = _st.setpoints.temperature.max_step
SCHEMA_2 = FeatureSchema.from_spec(bundled_spec("two-station"))
STARVED_2 = [k for k, n in enumerate(SCHEMA_2.state_names) if n.startswith("starved.")]
TEMPERATURE_OBS = [
    SCHEMA.state_names.index(n) for n in SCHEMA.state_names if n.startswith("temperature.")
]


def actions(rng: np.random.Generator, n: int, *shape: int) -> list[np.ndarray]:
    """Random actions, a little beyond the box so that the guard also clamps."""
    return [rng.uniform(-1.2, 1.2, shape).astype(np.float32) for _ in range(n)]


def test_importing_without_gymnasium_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "gymnasium", None)  # `import gymnasium` now fails
    monkeypatch.delitem(sys.modules, "linetwin.replay.env")
    with pytest.raises(ImportError, match=r"pip install 'linetwin\[gym\]'"):
        importlib.import_module("linetwin.replay.env")


@pytest.mark.parametrize("line", ["example", "two-station"])
def test_the_registered_env_passes_gymnasiums_checker(line):
    register_envs()
    register_envs()  # idempotent
    env = gymnasium.make(ENV_ID, line=line, horizon_s=3600.0)
    # the unwrapped env, as check_env asks; made through the registry it has a spec, so the
    # checker also compares observations of seeded resets and tries `close` twice
    check_env(env.unwrapped)
    env.close()


def test_spaces_are_the_surrogates_inputs_and_normalised_setpoint_targets():
    env = LineEnv("example")
    assert env.core.obs_names == SCHEMA.state_names + SCHEMA.setpoint_names
    assert env.observation_space.shape == (SCHEMA.n_inputs,)
    assert env.observation_space.dtype == np.float32
    assert np.isfinite(env.observation_space.low).all()
    assert np.isfinite(env.observation_space.high).all()
    assert env.action_space.shape == (SCHEMA.n_setpoints,)  # speeds, then thermal temperatures
    assert (env.action_space.low == -1).all() and (env.action_space.high == 1).all()
    obs, info = env.reset(seed=0)
    np.testing.assert_array_equal(obs[SCHEMA.n_state :], info["setpoints"].astype(np.float32))


def test_the_same_seed_gives_the_same_episode_bit_for_bit():
    def run(seed: int) -> tuple[np.ndarray, np.ndarray]:
        env = LineEnv("example", horizon_s=1800.0)
        obs, _ = env.reset(seed=seed)
        seen, rewards = [obs], []
        for a in actions(np.random.default_rng(3), 30, SCHEMA.n_setpoints):
            obs, reward, terminated, truncated, _ = env.step(a)
            seen.append(obs)
            rewards.append(reward)
            assert not terminated and truncated == (len(rewards) == 30)
        return np.array(seen), np.array(rewards)

    obs_a, rew_a = run(11)
    obs_b, rew_b = run(11)
    np.testing.assert_array_equal(obs_a, obs_b)
    np.testing.assert_array_equal(rew_a, rew_b)
    assert not np.array_equal(run(12)[1], rew_a)


def test_reward_and_observation_are_those_of_the_twin_driven_by_hand():
    """The env is the twin plus the guard: replaying its setpoints on a twin seeded the same
    way gives the same observations, and the reward is the KPI module's profit rate."""
    env = LineEnv("example")
    obs, info = env.reset(seed=21)
    twin = Twin(SPEC, 1, rng=np.random.default_rng(21))  # gymnasium seeds np_random like this
    before = twin.snapshot()
    np.testing.assert_array_equal(
        obs,
        np.concatenate([SCHEMA.state_features(before, 0.0)[0], info["setpoints"]]).astype(
            np.float32
        ),
    )
    for a in actions(np.random.default_rng(8), 20, SCHEMA.n_setpoints):
        obs, reward, _, _, info = env.step(a)
        twin.set_setpoints(SCHEMA.setpoint_array(info["setpoints"][None], twin.setpoints))
        now = twin.step(60.0)
        kpis = window_kpis(before, now)
        assert reward == kpis.profit_per_hour[0]
        assert info["throughput_per_hour"] == kpis.throughput_per_hour[0]
        state = SCHEMA.state_features(now, kpis.throughput_per_hour)[0]
        expected = np.concatenate([state, info["setpoints"]])
        np.testing.assert_array_equal(obs, expected.astype(np.float32))
        before = now


@pytest.mark.parametrize("bad", [1e6, -1e6, np.inf, -np.inf, np.nan, "mixed"])
def test_actions_outside_the_limits_never_reach_the_twin(bad):
    env = LineEnv("example")
    env.reset(seed=2)
    rng = np.random.default_rng(0)
    running = env.core.twin.setpoints[0]
    for k in range(12):
        if bad == "mixed":
            a = rng.choice([-1e9, -3.0, 0.0, 3.0, 1e9, np.nan], SCHEMA.n_setpoints)
        else:
            a = np.full(SCHEMA.n_setpoints, bad if k % 2 else -np.sign(np.nan_to_num(bad)))
        _, reward, _, _, info = env.step(a.astype(np.float32))
        now = env.core.twin.setpoints[0]
        present = PARAMS.present
        assert np.all(
            (now[present] >= PARAMS.lower[present]) & (now[present] <= PARAMS.upper[present])
        )
        assert np.all(np.abs(now - running) <= MAX_STEP + 1e-9)  # one decision, one ramp step
        assert np.isfinite(reward)
        if not np.isfinite(a).all():
            assert info["guard_fallback"] and info["guard_reasons"] == ("bad_proposal",)
            np.testing.assert_array_equal(now, running)  # held
        elif np.abs(a).max() > 1:
            assert "clamped" in info["guard_reasons"]
        running = now


def test_malformed_actions_are_refused_with_their_shape():
    env = LineEnv("two-station")
    env.reset(seed=0)
    with pytest.raises(ReplayError, match=r"shape \(2,\), got \(3,\)"):
        env.step(np.zeros(3, dtype=np.float32))
    with pytest.raises(ReplayError, match="decision_s must be a positive"):
        LineEnv("two-station", decision_s=0.0)
    with pytest.raises(ReplayError, match="horizon_s must be"):
        LineEnv("two-station", decision_s=60.0, horizon_s=30.0)


def test_each_vector_copy_is_the_line_env_with_seed_plus_its_index():
    """Copy i of `reset(seed=s)` has the exact dynamics of `LineEnv.reset(seed=s + i)`:
    same guard outputs, same rewards; only the sensor noise on temperatures is drawn for the
    batch at once."""
    n, steps = 4, 15
    venv = LineVectorEnv(n, "example")
    vobs, _ = venv.reset(seed=100)
    acts = actions(np.random.default_rng(5), steps, n, SCHEMA.n_setpoints)
    vrewards, vobs_all = [], [vobs]
    for a in acts:
        vobs, r, _, _, _ = venv.step(a)
        vrewards.append(r)
        vobs_all.append(vobs)
    exact = [k for k in range(SCHEMA.n_inputs) if k not in TEMPERATURE_OBS]
    for i in range(n):
        env = LineEnv("example")
        obs, _ = env.reset(seed=100 + i)
        np.testing.assert_array_equal(obs[exact], vobs_all[0][i, exact])
        for k, a in enumerate(acts):
            obs, r, _, _, _ = env.step(a[i])
            assert r == vrewards[k][i]
            np.testing.assert_array_equal(obs[exact], vobs_all[k + 1][i, exact])


def test_vector_env_autoresets_on_the_next_step_by_default():
    venv = LineVectorEnv(3, "two-station", decision_s=60.0, horizon_s=180.0)
    assert venv.metadata["autoreset_mode"] == AutoresetMode.NEXT_STEP
    first, _ = venv.reset(seed=0)
    assert (
        first.shape == venv.observation_space.shape == (3, venv.single_observation_space.shape[0])
    )
    a = np.zeros((3, 2), dtype=np.float32)
    for k in range(3):
        obs, reward, terminated, truncated, info = venv.step(a)
        assert obs.shape == (3, first.shape[1]) and reward.shape == (3,)
        assert not terminated.any()
        assert truncated.all() == (k == 2) and truncated.any() == (k == 2)
        assert info["_profit_per_hour"].all()
        assert obs in venv.observation_space
    obs, reward, terminated, truncated, info = venv.step(a)  # the reset step
    assert not truncated.any() and not terminated.any()
    np.testing.assert_array_equal(reward, 0.0)
    assert not info["_profit_per_hour"].any()
    np.testing.assert_array_equal(info["episode_step"][info["_episode_step"]], [])
    # a fresh episode: an empty line at nominal setpoints (the clock runs on)
    np.testing.assert_array_equal(obs[:, SCHEMA_2.n_state :], first[:, SCHEMA_2.n_state :])
    assert (obs[:, STARVED_2] == 1).all()
    assert info["time_s"][0] == 240.0
    obs, reward, _, truncated, info = venv.step(a)
    assert info["_profit_per_hour"].all() and (info["episode_step"] == 1).all()


def test_vector_env_same_step_autoreset_returns_the_final_observation():
    venv = LineVectorEnv(2, "two-station", horizon_s=120.0, autoreset_mode="SameStep")
    venv.reset(seed=4)
    a = np.zeros((2, 2), dtype=np.float32)
    venv.step(a)
    obs, reward, _, truncated, info = venv.step(a)
    assert truncated.all() and info["_final_obs"].all()
    assert info["final_obs"][0].shape == obs[0].shape
    assert not np.array_equal(info["final_obs"][0], obs[0])  # obs is the next episode's first
    assert info["final_info"]["profit_per_hour"].tolist() == reward.tolist()
    assert (obs[:, STARVED_2] == 1).all()
    _, _, _, truncated, info = venv.step(a)
    assert not truncated.any() and (info["episode_step"] == 1).all()


def test_vector_env_without_autoreset_resets_a_subset_on_request():
    venv = LineVectorEnv(3, "two-station", horizon_s=60.0, autoreset_mode=AutoresetMode.DISABLED)
    first, _ = venv.reset(seed=1)
    a = np.zeros((3, 2), dtype=np.float32)
    last, _, _, truncated, _ = venv.step(a)
    assert truncated.all()
    with pytest.raises(ReplayError, match="reset them with"):
        venv.step(a)
    mask = np.array([True, False, True])
    obs, info = venv.reset(options={"reset_mask": mask})
    np.testing.assert_array_equal(info["_time_s"], mask)
    np.testing.assert_array_equal(obs[1], last[1])  # untouched copies keep their observation
    np.testing.assert_array_equal(obs[mask][:, STARVED_2], 1.0)  # the others start empty
    np.testing.assert_array_equal(
        obs[mask][:, SCHEMA_2.n_state :], first[mask][:, SCHEMA_2.n_state :]
    )
    with pytest.raises(ReplayError, match=r"environments \[1\] ended"):
        venv.step(a)
    venv.reset(options={"reset_mask": ~mask})
    _, _, _, truncated, info = venv.step(a)
    assert truncated.all() and (info["episode_step"] == 1).all()


def test_vector_env_with_the_same_seed_repeats_across_autoresets():
    def run() -> tuple[np.ndarray, np.ndarray]:
        venv = LineVectorEnv(3, "example", horizon_s=300.0)
        obs, _ = venv.reset(seed=9)
        out, rewards = [obs], []
        for a in actions(np.random.default_rng(1), 14, 3, SCHEMA.n_setpoints):
            obs, r, _, _, _ = venv.step(a)
            out.append(obs)
            rewards.append(r)
        return np.array(out), np.array(rewards)

    (o1, r1), (o2, r2) = run(), run()
    np.testing.assert_array_equal(o1, o2)
    np.testing.assert_array_equal(r1, r2)


def test_a_random_rollout_of_64_lines_stays_in_its_spaces_and_limits():
    venv = LineVectorEnv(64, "example", horizon_s=3600.0)
    obs, _ = venv.reset(seed=0)
    venv.action_space.seed(0)
    lo, hi = PARAMS.lower, PARAMS.upper
    present = np.broadcast_to(PARAMS.present, (64, *PARAMS.present.shape))
    total = np.zeros(64)
    for _ in range(40):
        obs, reward, terminated, truncated, _ = venv.step(venv.action_space.sample())
        assert obs in venv.observation_space and obs.dtype == np.float32
        assert np.isfinite(reward).all() and not terminated.any() and not truncated.any()
        sp = venv.core.twin.setpoints
        assert ((sp >= lo) & (sp <= hi))[present].all()
        total += reward
    assert total.mean() > 0  # the line earns money, even under random setpoints
    assert np.unique(total).size == 64  # the copies are independent


def test_reset_refuses_unknown_options():
    with pytest.raises(ReplayError, match="takes no options"):
        LineEnv("two-station").reset(options={"warmup_s": 60})
    with pytest.raises(ReplayError, match="reset_mask"):
        LineVectorEnv(2, "two-station").reset(options={"reset_mask": np.array([1, 0])})


def test_steps_before_reset_are_refused():
    with pytest.raises(ReplayError, match="must be reset"):
        LineEnv("two-station").step(np.zeros(2, dtype=np.float32))


def test_the_documented_example_runs(capsys):
    text = (Path(__file__).resolve().parents[2] / "docs" / "replay.md").read_text("utf-8")
    (block,) = [b for b in re.findall(r"```python\n(.*?)```", text, flags=re.S) if "LineEnv" in b]
    exec(compile(block, "docs/replay.md", "exec"), {})
    assert float(capsys.readouterr().out.split()[0]) != 0.0  # a profit rate
