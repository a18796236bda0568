"""Value, policy and entropy landscapes: the numbers on the grid, the pictures, the GIF, TensorBoard, the flag."""

import json

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from PIL import Image, ImageSequence
from sb3_contrib import TQC
from stable_baselines3 import SAC
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks.landscape import LandscapeCallback, compute_landscape, draw_landscape
from callbacks.state_maps import get_state_map, register_state_map
from custom_sac import CustomSAC

TINY = dict(learning_starts=50, batch_size=32, buffer_size=2000, policy_kwargs=dict(net_arch=[16, 16]), seed=0)
# (row i: theta_dot = ys[i], column j: theta = xs[j]) of an 11 x 11 grid: corners, the upright state, off-centre points
POINTS = [(0, 0), (10, 10), (5, 5), (2, 7), (9, 1)]


def pendulum_obs(theta: float, theta_dot: float) -> np.ndarray:
    """Pendulum-v1's observation, written out here rather than taken from the state map under test."""
    return np.array([np.cos(theta), np.sin(theta), theta_dot], dtype=np.float32)


def sampled_std(model, obs: np.ndarray, n: int = 4000) -> float:
    """The policy's std before the tanh, estimated from its own samples: atanh of sampled actions."""
    th.manual_seed(0)
    obs_tensor = th.as_tensor(np.repeat(obs[None], n, axis=0))
    if model.use_sde:  # gSDE's std is over exploration matrices: one drawn for each sample
        model.policy.actor.reset_noise(n)
    with th.no_grad():
        actions = model.policy.actor(obs_tensor, deterministic=False)[:, 0].double()
    return float(th.atanh(actions.clamp(-1 + 1e-9, 1 - 1e-9)).std())


def critic_min(model, obs: np.ndarray, scaled_action: np.ndarray) -> float:
    """The Q each algorithm's actor loss climbs, from its critic's raw output."""
    obs_tensor, action_tensor = th.as_tensor(obs[None]), th.as_tensor(scaled_action[None], dtype=th.float32)
    with th.no_grad():
        q = model.critic(obs_tensor, action_tensor)
    if isinstance(model, TQC):  # (batch, critics, quantiles): TQC's actor loss takes the mean of all
        return float(q.mean())
    if isinstance(q, tuple):  # SB3's SAC: one (batch, 1) tensor per critic
        return float(th.cat(q, dim=1).min())
    return float(q.min())  # CustomSAC: (critics, batch, 1)


@pytest.mark.parametrize("algo", [CustomSAC, SAC, TQC])
def test_grid_values_are_the_models_own(algo, one_torch_thread):
    """At known grid points, the value, mean action and std panels equal what the model itself computes there."""
    model = algo("MlpPolicy", "Pendulum-v1", **TINY)
    model.learn(150)  # a few gradient steps: weights and the entropy coefficient away from their initial values
    landscape = compute_landscape(model, get_state_map("Pendulum-v1"), resolution=11)
    assert landscape.q.shape == landscape.action.shape == landscape.std.shape == (11, 11)
    assert landscape.xs[0] == pytest.approx(-np.pi) and landscape.ys[-1] == pytest.approx(8.0)
    for i, j in POINTS:
        obs = pendulum_obs(landscape.xs[j], landscape.ys[i])
        action, _ = model.predict(obs, deterministic=True)
        assert landscape.action[i, j] == pytest.approx(action[0], abs=1e-5)
        q = critic_min(model, obs, model.policy.scale_action(action))
        assert landscape.q[i, j] == pytest.approx(q, rel=1e-5, abs=1e-5)
        assert landscape.std[i, j] == pytest.approx(sampled_std(model, obs), rel=0.05)
    assert landscape.ent_coef == pytest.approx(float(th.exp(model.log_ent_coef.detach())))
    assert landscape.ent_coef != pytest.approx(1.0)


@pytest.mark.parametrize("algo", [CustomSAC, SAC])
def test_gsde_std_is_the_state_dependent_one(algo, one_torch_thread):
    """MountainCar's map is the observation itself; with gSDE the std depends on the state through the features."""
    model = algo("MlpPolicy", "MountainCarContinuous-v0", use_sde=True, **TINY)
    landscape = compute_landscape(model, get_state_map("MountainCarContinuous-v0"), resolution=11)
    assert landscape.xs[-1] == pytest.approx(0.6) and landscape.ys[0] == pytest.approx(-0.07)
    for i, j in POINTS:
        obs = np.array([landscape.xs[j], landscape.ys[i]], dtype=np.float32)
        action, _ = model.predict(obs, deterministic=True)
        assert landscape.action[i, j] == pytest.approx(action[0], abs=1e-5)
        assert landscape.std[i, j] == pytest.approx(sampled_std(model, obs), rel=0.05)
    assert np.ptp(landscape.std) > 0


def test_drawn_panels_show_the_grid_values():
    """The figure's three images are the landscape's arrays, rows upwards in the map's second variable."""
    model = CustomSAC("MlpPolicy", "Pendulum-v1", **TINY)
    state_map = get_state_map("Pendulum-v1")
    landscape = compute_landscape(model, state_map, resolution=11)
    figure = draw_landscape(landscape, state_map)
    images = [ax.images[0] for ax in figure.axes if ax.images]
    for image, values in zip(images, (landscape.q, landscape.action, landscape.std)):
        np.testing.assert_array_equal(image.get_array(), values)
        assert image.origin == "lower" and tuple(image.get_extent()) == (-np.pi, np.pi, -8.0, 8.0)


def test_normalised_runs_see_normalised_observations(one_torch_thread):
    """With VecNormalize the grid goes through the run's statistics, as the env's observations do."""
    env = VecNormalize(DummyVecEnv([lambda: gym.make("Pendulum-v1")]), norm_reward=False)
    model = CustomSAC("MlpPolicy", env, **TINY)
    model.learn(100)
    vec_normalize = model.get_vec_normalize_env()
    assert np.abs(vec_normalize.obs_rms.mean).max() > 0.05  # statistics far enough from the identity to matter
    landscape = compute_landscape(model, get_state_map("Pendulum-v1"), resolution=11)
    for i, j in POINTS:
        obs = vec_normalize.normalize_obs(pendulum_obs(landscape.xs[j], landscape.ys[i]))
        action, _ = model.predict(obs, deterministic=True)
        assert landscape.action[i, j] == pytest.approx(action[0], abs=1e-5)


def test_callback_writes_pngs_one_gif_frame_each_and_tensorboard_images(tmp_path, one_torch_thread):
    model = CustomSAC("MlpPolicy", "Pendulum-v1", tensorboard_log=str(tmp_path / "tb"), **TINY)
    callback = LandscapeCallback(100, tmp_path / "landscapes", "Pendulum-v1", resolution=21)
    model.learn(300, callback=callback)

    pngs = sorted((tmp_path / "landscapes").glob("*.png"), key=lambda p: int(p.stem))
    assert [p.stem for p in pngs] == ["0", "100", "200", "300"]  # the untrained model first
    frames = [np.asarray(Image.open(p).convert("RGB")) for p in pngs]
    gif = Image.open(tmp_path / "landscapes.gif")
    assert gif.n_frames == len(pngs)
    for frame, decoded in zip(frames, ImageSequence.Iterator(gif)):
        assert np.abs(np.asarray(decoded.convert("RGB"), dtype=float) - frame).mean() < 3  # 256-colour palette
    assert callback.count == 4 and callback.seconds > 0

    events = EventAccumulator(str(next((tmp_path / "tb").iterdir())), size_guidance={"images": 0})
    events.Reload()
    images = events.Images("landscape/figure")
    assert [image.step for image in images] == [0, 100, 200, 300]
    assert images[-1].encoded_image_string == pngs[-1].read_bytes()


def test_resumed_run_restarts_the_animation_from_its_pngs(tmp_path, one_torch_thread):
    model = CustomSAC("MlpPolicy", "Pendulum-v1", **TINY)
    model.learn(100, callback=LandscapeCallback(100, tmp_path / "landscapes", "Pendulum-v1", resolution=11))
    (tmp_path / "landscapes" / "1000.png").write_bytes((tmp_path / "landscapes" / "100.png").read_bytes())
    callback = LandscapeCallback(100, tmp_path / "landscapes", "Pendulum-v1", resolution=11)
    model.learn(100, callback=callback, reset_num_timesteps=False)
    assert sorted(int(p.stem) for p in (tmp_path / "landscapes").glob("*.png")) == [0, 100, 200]
    assert Image.open(tmp_path / "landscapes.gif").n_frames == 3
    assert callback.count == 1


def test_a_registered_map_draws_its_env(tmp_path):
    """One call registers a map; the callback then draws that env with its ranges and the episode's path."""
    gym.register("LandscapePendulum-v0", entry_point="gymnasium.envs.classic_control:PendulumEnv", max_episode_steps=50)
    register_state_map(
        "LandscapePendulum-v0",
        lambda points: np.stack([np.cos(points[:, 0]), np.sin(points[:, 0]), points[:, 1]], axis=1),
        x_range=(-1.0, 1.0),
        y_range=(-2.0, 2.0),
        labels=("angle", "speed"),
        from_obs=lambda obs: np.stack([np.arctan2(obs[:, 1], obs[:, 0]), obs[:, 2]], axis=1),
    )
    model = CustomSAC("MlpPolicy", "LandscapePendulum-v0", **TINY)
    callback = LandscapeCallback(1000, tmp_path / "landscapes", "LandscapePendulum-v0", resolution=5)
    model.learn(1, callback=callback)  # draws the untrained model
    landscape = callback.last
    assert list(landscape.xs) == [-1.0, -0.5, 0.0, 0.5, 1.0] and list(landscape.ys) == [-2.0, -1.0, 0.0, 1.0, 2.0]
    assert landscape.trajectory.shape == (50, 2)  # one deterministic episode of the registered env
    assert Image.open(tmp_path / "landscapes" / "0.png").size == Image.open(tmp_path / "landscapes.gif").size


def test_train_script_writes_landscapes_and_their_share(run_script, tmp_path):
    status, err = run_script(
        "train.py",
        [
            *("-n", "200", "--seed", "0", "-f", str(tmp_path), "-tb", "", "--landscape-freq", "100", "--no-progress"),
            *("--eval-freq", "100", "--eval-episodes", "1", "--video-freq", "0", "--save-freq", "0", "-v", "0"),
            *("-params", "learning_starts:50", "batch_size:32", "policy_kwargs:dict(net_arch=[16, 16])"),
        ],
    )
    assert status == 0, err
    run_dir = tmp_path / "custom" / "Pendulum-v1_1"
    assert sorted(p.name for p in (run_dir / "landscapes").iterdir()) == ["0.png", "100.png", "200.png"]
    assert Image.open(run_dir / "landscapes.gif").n_frames == 3
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["landscapes"] == 3 and 0 < summary["landscape_share"] < 1
    assert summary["landscape_time_s"] == pytest.approx(summary["landscape_share"] * summary["wall_time_s"])

    status, err = run_script("plot.py", ["--landscape", str(run_dir)])
    assert status == 0, err
    assert Image.open(run_dir / "landscape.png").size[0] > 500


def test_unmapped_env_with_the_flag_is_refused_in_one_line(run_script, tmp_path):
    status, err = run_script(
        "train.py", ["--env", "LunarLanderContinuous-v3", "--landscape-freq", "1000", "-f", str(tmp_path)]
    )
    assert status == 1 and err.count("\n") == 1, err
    assert err.startswith("error: --landscape-freq 1000: no state map for LunarLanderContinuous-v3"), err
    assert "register_state_map" in err and not any(tmp_path.iterdir())  # nothing created


@pytest.mark.parametrize("value", ["-5", "2.5", "abc", ".nan", ".inf"])
def test_a_bad_landscape_freq_is_refused_in_one_line(run_script, tmp_path, value):
    status, err = run_script("train.py", ["-params", f"landscape_freq:{value}", "-f", str(tmp_path)])
    assert status == 1 and err.startswith("error: landscape_freq must be an integer >= 0"), err
    assert not any(tmp_path.iterdir())


def test_shipped_pendulum_config_draws_landscapes_and_others_do_not():
    from experiment.config import load_hyperparams

    assert load_hyperparams("custom", "Pendulum-v1")["landscape_freq"] > 0
    assert "landscape_freq" not in load_hyperparams("sb3", "MountainCarContinuous-v0")


def test_an_env_wrapper_that_changes_the_observations_is_refused_in_one_line(tmp_path):
    from experiment.errors import ConfigError
    from experiment.run import TrainSettings, train

    overrides = {"env_wrapper": "gymnasium.wrappers.TimeAwareObservation", "landscape_freq": 50}
    settings = TrainSettings(n_timesteps=100, seed=0, overrides=overrides, log_folder=str(tmp_path))
    settings.tensorboard_log, settings.progress, settings.verbose, settings.video_freq = None, False, 0, 0
    with pytest.raises(ConfigError, match=r"makes observations of shape \(3,\), but this run's env gives \(4,\)"):
        train(settings)
