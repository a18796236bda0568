"""The zoo's hyperparameter format, key by key: each test proves the key is applied, for both algorithms."""

import json
import re

import gymnasium as gym
import imageio
import numpy as np
import pytest
import torch as th
import yaml
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.monitor import Monitor
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.vec_env import DummyVecEnv, VecNormalize

from callbacks import overlay_layout
from experiment.config import ALGOS, DEFAULT_CONFIG, ConfigError, load_hyperparams
from experiment.envs import make_env
from experiment.run import TrainSettings, create_model, train
from tests import zoo_envs  # noqa: F401  (registers PointGoal-v0 and BrokenRenderPendulum-v0 here too)
from tests.test_train import run

ALGO_PAIR = ["custom", "sb3"]
FAST = ["--no-progress", "-v", "0", "-tb", ""]
ONE_EVAL_ONE_VIDEO_AT_200 = ["--eval-freq", "200", "--eval-episodes", "1", "--save-freq", "0", "--video-freq", "200"]
SMALL = {"learning_starts": 50, "batch_size": 32, "buffer_size": 2000, "policy_kwargs": "dict(net_arch=[16, 16])"}


def train_with_config(tmp_path, algo: str, config: str, n_timesteps: int, seed: int, *more: str):
    """train.py with a zoo config, quietly, its runs under ``tmp_path``."""
    options = f"--algo {algo} -n {n_timesteps} --seed {seed}".split()
    return run("train.py", *options, "--config", config, "-f", str(tmp_path), *FAST, *more)


def write_config(path, entry: dict, env_id: str = "Pendulum-v1"):
    path.write_text(yaml.safe_dump({env_id: {**SMALL, **entry}}))
    return str(path)


def episode_returns(stdout: str) -> list[float]:
    return [float(x) for x in re.findall(r"episode +\d+: return +(-?[\d.]+)", stdout)]


@pytest.mark.parametrize("algo", ALGO_PAIR)
def test_normalize_is_applied_saved_and_frozen_for_evaluation(algo, tmp_path):
    probe = tmp_path / "probe.json"
    config = write_config(
        tmp_path / "zoo.yml",
        {
            "normalize": "dict(norm_obs=True, norm_reward=False)",
            "gamma": 0.95,
            "callback": [{"tests.zoo_envs.ProbeCallback": {"path": str(probe)}}],
        },
    )
    schedule = "--eval-freq 150 --eval-episodes 2 --save-freq 300 --video-freq 300"
    train_with_config(tmp_path, algo, config, 300, 2, *schedule.split())
    run_dir = tmp_path / algo / "Pendulum-v1_1"

    # Saved where the zoo saves it, with the config's kwargs and gamma, and inside the checkpoint
    pendulum = DummyVecEnv([lambda: gym.make("Pendulum-v1")])
    stats = VecNormalize.load(str(run_dir / "Pendulum-v1" / "vecnormalize.pkl"), pendulum)
    assert stats.norm_obs and not stats.norm_reward and stats.gamma == 0.95
    assert stats.obs_rms.count == pytest.approx(301, abs=1)  # the first reset and 300 steps
    assert (run_dir / "Pendulum-v1" / "best_vecnormalize.pkl").is_file()
    assert (run_dir / "checkpoints" / "step_300" / "vecnormalize.npz").is_file()

    # The policy saw normalised observations: (obs - mean) / sqrt(var + eps) with the statistics of that step
    steps = json.loads(probe.read_text())["steps"]
    assert len(steps) == 50
    for step in steps:
        original, mean, var = (np.array(step[k]) for k in ("original_obs", "mean", "var"))
        expected = np.clip((original - mean) / np.sqrt(var + 1e-8), -10, 10)
        np.testing.assert_allclose(step["policy_obs"], expected, rtol=1e-5, atol=1e-5)
    assert not np.allclose(steps[-1]["policy_obs"], steps[-1]["original_obs"], atol=0.05)

    # evaluate.py on the run folder = best_model.zip with its statistics loaded by hand, frozen
    proc = run("evaluate.py", str(run_dir), "--episodes", "2", "--seed", "5", "--trust-files")  # the probe: tests.
    assert "best_vecnormalize.npz" in proc.stdout  # read without unpickling; the .pkl beside it is the zoo's
    venv = VecNormalize.load(
        str(run_dir / "Pendulum-v1" / "best_vecnormalize.pkl"), DummyVecEnv([lambda: Monitor(gym.make("Pendulum-v1"))])
    )
    venv.training, venv.norm_reward = False, False
    venv.seed(5)
    count = venv.obs_rms.count
    model = ALGOS[algo].load(run_dir / "best_model.zip")
    returns, _ = evaluate_policy(model, venv, n_eval_episodes=2, deterministic=True, return_episode_rewards=True)
    assert episode_returns(proc.stdout) == pytest.approx([round(r, 2) for r in returns], abs=0.006)
    assert venv.obs_rms.count == count
    assert sorted(p.name for p in (run_dir / "videos").iterdir()) == ["300.gif", "300.mp4"]


@pytest.mark.parametrize("algo", ALGO_PAIR)
def test_wrappers_frame_stack_env_kwargs_and_vec_env_shape_the_env(algo, tmp_path):
    probe = tmp_path / "probe.json"
    config = write_config(
        tmp_path / "zoo.yml",
        {
            "n_envs": 2,
            "env_wrapper": [
                "sb3_contrib.common.wrappers.TimeFeatureWrapper",
                {"gymnasium.wrappers.RescaleAction": {"min_action": -0.5, "max_action": 0.5}},
            ],
            "vec_env_wrapper": "tests.zoo_envs.MarkerVecWrapper",
            "frame_stack": 2,
            "callback": {"tests.zoo_envs.ProbeCallback": {"path": str(probe), "attrs": ["g"]}},
        },
    )
    env_options = "--env-kwargs g:5.0 --vec-env subproc"
    train_with_config(tmp_path, algo, config, 200, 1, *env_options.split(), *ONE_EVAL_ONE_VIDEO_AT_200)
    run_dir = tmp_path / algo / "Pendulum-v1_1"
    seen = json.loads(probe.read_text())
    assert seen["vec_layers"] == ["VecFrameStack", "MarkerVecWrapper", "SubprocVecEnv"]
    assert seen["env_chain"].startswith("<RescaleAction<TimeFeatureWrapper<Monitor<TimeLimit<")
    assert seen["attrs"] == {"g": 5.0} and seen["n_envs"] == 2
    assert seen["observation_shape"] == [2 * (3 + 1)] and seen["action_high"] == [0.5]
    assert (run_dir / "monitor.csv").is_file() and (run_dir / "1.monitor.csv").is_file()
    assert yaml.safe_load((run_dir / "config.yml").read_text())["env_kwargs"] == {"g": 5.0}
    # evaluate.py and the video rebuild the same chain (a plain Pendulum would not fit the model's 8 inputs); the
    # folder names modules of tests/, which is not among the packages a run folder may import without being trusted
    refused = run("evaluate.py", str(run_dir), "--episodes", "1", check=False)
    assert refused.returncode == 1 and refused.stderr.startswith(f"error: {run_dir} would import tests.zoo_envs (vec")
    proc = run("evaluate.py", str(run_dir), "--episodes", "1", "--video", "--trust-files")
    assert len(episode_returns(proc.stdout)) == 1 and "video of one episode" in proc.stdout
    assert (run_dir / "videos" / "200.mp4").is_file()


@pytest.mark.parametrize("algo", ALGO_PAIR)
def test_her_trains_a_goal_env_with_multi_input_policy(algo, tmp_path):
    probe = tmp_path / "probe.json"
    config = write_config(
        tmp_path / "her.yml",
        {
            "policy": "MultiInputPolicy",
            "normalize": True,
            "replay_buffer_class": "HerReplayBuffer",
            "replay_buffer_kwargs": "dict(goal_selection_strategy='future', n_sampled_goal=4)",
            "monitor_kwargs": "dict(info_keywords=('is_success',))",
            "callback": {"tests.zoo_envs.ProbeCallback": {"path": str(probe)}},
        },
        env_id="PointGoal-v0",
    )
    options = "--env PointGoal-v0 --gym-packages tests.zoo_envs"
    schedule = "--eval-freq 300 --eval-episodes 2 --save-freq 150 --video-freq 300"
    train_with_config(tmp_path, algo, config, 300, 0, *options.split(), *schedule.split())
    run_dir = tmp_path / algo / "PointGoal-v0_1"
    assert (run_dir / "checkpoints" / "step_300" / "replay_buffer.npz").is_file()  # a HER buffer checkpoints too
    seen = json.loads(probe.read_text())
    assert seen["replay_buffer"] == "HerReplayBuffer" and seen["her"] == {"n_sampled_goal": "4", "her_ratio": "0.8"}
    assert seen["vec_layers"] == ["VecNormalize", "DummyVecEnv"]
    model = ALGOS[algo].load(run_dir / "PointGoal-v0.zip", env=make_env("PointGoal-v0"))  # HER loads with an env
    assert type(model.policy).__name__ == "MultiInputPolicy" and model.num_timesteps == 300
    assert "is_success" in (run_dir / "monitor.csv").read_text().splitlines()[1]
    assert (run_dir / "videos" / "300.mp4").is_file()
    proc = run("evaluate.py", str(run_dir), "--episodes", "2", "--trust-files")  # --gym-packages tests.zoo_envs
    assert len(episode_returns(proc.stdout)) == 2


@pytest.mark.parametrize("algo", ALGO_PAIR)
def test_policy_kwargs_as_string_or_mapping_build_the_same_networks(algo):
    nets = []
    mapping = {"net_arch": [24, 12], "activation_fn": th.nn.Tanh}
    for value in ("dict(net_arch=[24, 12], activation_fn=nn.Tanh)", mapping):
        hyperparams = load_hyperparams(algo, "Pendulum-v1", overrides={"policy_kwargs": value})
        model = create_model(algo, make_env("Pendulum-v1"), hyperparams, seed=0)
        nets.append([(type(m).__name__, getattr(m, "out_features", None)) for m in model.actor.latent_pi])
    assert nets[0] == nets[1] == [("Linear", 24), ("Tanh", None), ("Linear", 12), ("Tanh", None)]


@pytest.mark.parametrize("algo", ALGO_PAIR)
def test_default_entry_and_action_noise_reach_the_model(algo, tmp_path):
    config = tmp_path / "zoo.yml"
    config.write_text(
        yaml.safe_dump(
            {
                "default": {"learning_starts": 77, "noise_type": "normal", "noise_std": 0.3},
                "MountainCarContinuous-v0": {"learning_starts": 5},
            }
        )
    )
    hyperparams = load_hyperparams(algo, "Pendulum-v1", config)
    model = create_model(algo, make_env("Pendulum-v1"), hyperparams, seed=0)
    assert model.learning_starts == 77
    assert isinstance(model.action_noise, NormalActionNoise) and model.action_noise._sigma.tolist() == [0.3]


SHIPPED = {env: entry for env, entry in yaml.safe_load(DEFAULT_CONFIG.read_text()).items() if env != "default"}


@pytest.mark.parametrize("env_id", list(SHIPPED))
def test_every_shipped_entry_builds_the_same_model_for_both_algos(env_id, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # MuJoCo writes its compiler warnings (HalfCheetah's XML) to ./MUJOCO_LOG.TXT
    built = {}
    for algo in ALGO_PAIR:
        hyperparams = load_hyperparams(algo, env_id)
        hyperparams["buffer_size"] = 1000  # the shipped sizes would reserve gigabytes
        model = create_model(algo, make_env(env_id), hyperparams, seed=0)
        built[algo] = {
            "lr": model.lr_schedule(1.0),
            "batch_size": model.batch_size,
            "gamma": model.gamma,
            "tau": model.tau,
            "train_freq": model.train_freq,
            "gradient_steps": model.gradient_steps,
            "learning_starts": model.learning_starts,
            "net_arch": model.policy.net_arch,
        }
    assert built["custom"] == built["sb3"]


ZOO_MISTAKES = {
    "env_wrapper": ({"env_wrapper": "gymnasium.wrappers.NoSuchWrapper"}, "env_wrapper 'gymnasium.wrappers.NoSuch"),
    "normalize": ({"normalize": "dict(norm_obz=True)"}, "VecNormalize takes no norm_obz"),
    "frame_stack": ({"frame_stack": 0}, "frame_stack must be an integer >= 1"),
    "callback": ({"callback": {"tests.zoo_envs.ProbeCallback": {"paht": "x"}}}, "rejects its kwargs"),
    "replay_buffer_class": ({"replay_buffer_class": "HerBuffer"}, "unknown replay_buffer_class 'HerBuffer'"),
    "replay_buffer_kwargs": ({"replay_buffer_kwargs": "dict(n_sampled_goal="}, "replay_buffer_kwargs must be a"),
    "noise_type": ({"noise_type": "pink", "noise_std": 0.1}, "unknown noise_type 'pink'"),
}


@pytest.mark.parametrize("key", list(ZOO_MISTAKES))
def test_a_bad_zoo_value_is_an_error_before_the_run_folder(key, tmp_path):
    entry, message = ZOO_MISTAKES[key]
    settings = TrainSettings(config=write_config(tmp_path / "bad.yml", entry), log_folder=str(tmp_path / "logs"))
    with pytest.raises(ConfigError, match=re.escape(message)):
        train(settings)
    assert not (tmp_path / "logs").exists()


@pytest.mark.parametrize(
    ("env_id", "algo", "frame_shape"),
    [("LunarLanderContinuous-v3", "sb3", (400, 600)), ("Hopper-v4", "custom", (480, 480))],
)  # one algo each: test_every_shipped_entry_builds_the_same_model_for_both_algos covers the other
def test_box2d_and_mujoco_train_with_the_shipped_config_and_an_annotated_video(env_id, algo, frame_shape, tmp_path):
    run(
        "train.py",
        "--algo",
        algo,
        "--env",
        env_id,
        "-n",
        "200",
        "--seed",
        "0",
        "-f",
        str(tmp_path),
        *FAST,
        "-params",
        "learning_starts:100",
        "batch_size:64",
        "buffer_size:1000",
        "--env-kwargs",
        "max_episode_steps:60",
        *ONE_EVAL_ONE_VIDEO_AT_200,
    )
    run_dir = tmp_path / algo / f"{env_id}_1"
    assert ALGOS[algo].load(run_dir / f"{env_id}.zip").num_timesteps == 200
    reader = imageio.get_reader(str(run_dir / "videos" / "200.mp4"), "ffmpeg")
    frames = np.stack([frame for frame in reader])  # list(reader) would ask len(), which is sys.maxsize
    reader.close()
    assert 1 < len(frames) <= 60 and len(frames) == len(imageio.mimread(run_dir / "videos" / "200.gif"))
    height, width = frame_shape
    assert frames.shape[1:] == (height + overlay_layout(height, width).strip_height, width, 3)
    assert frames[:, :height].std() > 10  # a real render, not a blank frame


def test_a_video_that_cannot_render_is_one_line_and_training_goes_on(tmp_path, capsys):
    settings = TrainSettings(
        env_id="BrokenRenderPendulum-v0",
        n_timesteps=200,
        seed=0,
        log_folder=str(tmp_path),
        tensorboard_log=None,
        overrides=dict(SMALL),
        eval_freq=200,
        eval_episodes=1,
        save_freq=0,
        video_freq=100,
        progress=False,
        verbose=0,
        gym_packages=["tests.zoo_envs"],
    )
    result = train(settings)
    warnings = [line for line in capsys.readouterr().out.splitlines() if "no video" in line]
    assert warnings == [
        "warning: no video at step 100 (RuntimeError: no OpenGL context: set MUJOCO_GL=egl); "
        "training goes on without videos"
    ]
    assert ALGOS["custom"].load(result.model_path).num_timesteps == 200
