"""CustomSAC as an SB3 citizen: learning, save/load, VecEnvs, callbacks, logger keys, options."""

from functools import partial

import gymnasium as gym
import numpy as np
import pytest
import torch as th
import yaml
from stable_baselines3.common.callbacks import EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.noise import NormalActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor
from stable_baselines3.common.utils import LinearSchedule
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from custom_sac import CustomSAC

SMALL = dict(buffer_size=10_000, learning_starts=50, batch_size=32, policy_kwargs=dict(net_arch=[32, 32]), seed=0)


@pytest.mark.slow
def test_learns_pendulum_with_shipped_config(shipped_config):
    """The one multi-thousand-step test: the shipped Pendulum-v1 config solves it within 6,000 steps."""
    hyperparams = {k: v for k, v in shipped_config["Pendulum-v1"].items() if k not in ("n_timesteps", "policy")}
    model = CustomSAC("MlpPolicy", "Pendulum-v1", seed=0, **hyperparams)
    model.learn(6_000)
    eval_env = gym.make("Pendulum-v1")
    eval_env.reset(seed=123)
    mean_return, _ = evaluate_policy(model, eval_env, n_eval_episodes=10, deterministic=True)
    assert mean_return >= -250, mean_return


@pytest.fixture
def shipped_config():
    with open("configs/sac.yml") as f:
        return yaml.safe_load(f)


def optimizer_states_equal(a: th.optim.Optimizer, b: th.optim.Optimizer) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    if sa["param_groups"] != sb["param_groups"] or sa["state"].keys() != sb["state"].keys():
        return False
    return all(
        all(th.equal(sa["state"][k][name], sb["state"][k][name]) for name in sa["state"][k]) for k in sa["state"]
    )


def test_save_load_round_trip(tmp_path):
    model = CustomSAC("MlpPolicy", "Pendulum-v1", learning_rate=1e-3, critic_learning_rate=2e-3, **SMALL)
    model.learn(200)
    model.save(tmp_path / "model")
    loaded = CustomSAC.load(tmp_path / "model", env=make_vec_env("Pendulum-v1", n_envs=1))

    obs = np.random.default_rng(0).uniform(-1, 1, size=(16, 3)).astype(np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], loaded.predict(obs, deterministic=True)[0])
    for name in ("actor", "critic"):
        original, restored = getattr(model, name).optimizer, getattr(loaded, name).optimizer
        assert optimizer_states_equal(original, restored), name
    assert optimizer_states_equal(model.ent_coef_optimizer, loaded.ent_coef_optimizer)
    assert th.equal(model.log_ent_coef, loaded.log_ent_coef)
    for p, q in zip(model.critic_target.parameters(), loaded.critic_target.parameters()):
        assert th.equal(p, q)
    assert loaded.critic.optimizer.param_groups[0]["lr"] == 2e-3
    assert loaded.actor.optimizer.param_groups[0]["lr"] == 1e-3

    # training continues after load (a fresh buffer must fill up to learning_starts first)
    before = [p.clone() for p in loaded.actor.parameters()]
    loaded.learn(150, reset_num_timesteps=False)
    assert loaded.num_timesteps == 350
    assert any(not th.equal(a, b) for a, b in zip(before, loaded.actor.parameters()))


def test_replay_buffer_and_set_parameters(tmp_path):
    model = CustomSAC("MlpPolicy", "Pendulum-v1", **SMALL)
    model.learn(120)
    model.save_replay_buffer(tmp_path / "buffer")
    other = CustomSAC("MlpPolicy", "Pendulum-v1", **{**SMALL, "seed": 5})
    other.load_replay_buffer(tmp_path / "buffer")
    assert other.replay_buffer.size() == model.replay_buffer.size() == 120
    np.testing.assert_array_equal(other.replay_buffer.observations, model.replay_buffer.observations)

    other.set_parameters(model.get_parameters())
    obs = np.zeros((1, 3), dtype=np.float32)
    np.testing.assert_array_equal(model.predict(obs, deterministic=True)[0], other.predict(obs, deterministic=True)[0])


def test_vec_env_callbacks_and_tensorboard_keys(tmp_path):
    env = make_vec_env("Pendulum-v1", n_envs=2, seed=0)
    eval_cb = EvalCallback(make_vec_env("Pendulum-v1", n_envs=1), eval_freq=100, n_eval_episodes=1, verbose=0)
    model = CustomSAC("MlpPolicy", env, tensorboard_log=str(tmp_path), gradient_steps=2, **SMALL)
    model.learn(400, callback=eval_cb, log_interval=1)
    assert model.num_timesteps == 400
    assert eval_cb.n_calls > 0 and np.isfinite(eval_cb.last_mean_reward)

    (run_dir,) = list(tmp_path.iterdir())
    events = EventAccumulator(str(run_dir))
    events.Reload()
    tags = set(events.Tags()["scalars"])
    for key in ("train/actor_loss", "train/critic_loss", "train/ent_coef", "train/ent_coef_loss", "eval/mean_reward"):
        assert key in tags, (key, tags)
    losses = [e.value for e in events.Scalars("train/critic_loss")]
    assert all(np.isfinite(losses)) and len(losses) > 1


def test_constructor_options_take_effect():
    model = CustomSAC(
        "MlpPolicy",
        "Pendulum-v1",
        learning_rate=LinearSchedule(1e-3, 1e-4, 1.0),
        actor_learning_rate=5e-4,
        ent_coef_learning_rate=1e-2,
        target_entropy=-0.3,
        ent_coef="auto_0.2",
        **{**SMALL, "policy_kwargs": dict(net_arch=dict(pi=[16], qf=[24, 24]), n_critics=3, activation_fn=th.nn.Tanh)},
    )
    assert model.target_entropy == -0.3
    assert np.isclose(model.log_ent_coef.exp().item(), 0.2)
    assert model.critic.q_net[0].weight.shape == (3, 4, 24)
    assert model.actor.latent_pi[0].out_features == 16
    assert isinstance(model.actor.latent_pi[1], th.nn.Tanh)
    model.learn(200)
    # the critic follows the linear schedule, the actor and alpha their own constants
    assert model.actor.optimizer.param_groups[0]["lr"] == 5e-4
    assert model.ent_coef_optimizer.param_groups[0]["lr"] == 1e-2
    assert 1e-4 < model.critic.optimizer.param_groups[0]["lr"] < 1e-3

    fixed = CustomSAC("MlpPolicy", "Pendulum-v1", ent_coef=0.05, **SMALL)
    fixed.learn(100)
    assert fixed.ent_coef_optimizer is None and fixed.logger.name_to_value["train/ent_coef"] == pytest.approx(0.05)


def test_asymmetric_box_actions_are_the_tanh_mean_mapped_onto_the_bounds():
    """The deterministic action is low + (tanh(mu(s)) + 1) / 2 * (high - low), computed here from the actor's mean."""
    env = gym.wrappers.RescaleAction(
        gym.make("MountainCarContinuous-v0"), min_action=np.float32(-0.5), max_action=np.float32(2.0)
    )
    model = CustomSAC("MlpPolicy", env, **SMALL)
    model.learn(120)
    obs = np.random.default_rng(0).uniform(-1, 1, (50, 2)).astype(np.float32)
    actions, _ = model.predict(obs, deterministic=True)
    with th.no_grad():
        mean, _, _ = model.actor.get_action_dist_params(th.as_tensor(obs))
    expected = -0.5 + (th.tanh(mean).numpy() + 1.0) / 2.0 * 2.5
    np.testing.assert_allclose(actions, expected, rtol=1e-5, atol=1e-6)
    assert np.ptp(actions) > 1e-3  # the observations give different actions: the mapping is exercised


def test_value_function_variant_trains(tmp_path):
    model = CustomSAC("MlpPolicy", "Pendulum-v1", use_value_function=True, **SMALL)
    target_before = [p.clone() for p in model.policy.value_target.parameters()]
    model.learn(150)
    assert np.isfinite(model.logger.name_to_value["train/value_loss"])
    assert any(not th.equal(a, b) for a, b in zip(target_before, model.policy.value_target.parameters()))
    model.save(tmp_path / "v")
    loaded = CustomSAC.load(tmp_path / "v")
    assert loaded.use_value_function
    assert optimizer_states_equal(model.value_net.optimizer, loaded.value_net.optimizer)


def test_rejects_discrete_action_space():
    with pytest.raises(AssertionError, match="only supports"):
        CustomSAC("MlpPolicy", "CartPole-v1")


class DropoutExtractor(BaseFeaturesExtractor):
    """A features extractor whose output depends on train/eval mode."""

    def __init__(self, observation_space: gym.spaces.Box):
        super().__init__(observation_space, features_dim=8)
        self.net = th.nn.Sequential(th.nn.Linear(3, 8), th.nn.Dropout(p=0.5))

    def forward(self, obs: th.Tensor) -> th.Tensor:
        return self.net(obs)


def test_train_eval_mode_still_switches_when_it_matters():
    kwargs = dict(features_extractor_class=DropoutExtractor, net_arch=[16])
    model = CustomSAC("MlpPolicy", "Pendulum-v1", **{**SMALL, "policy_kwargs": kwargs})
    obs = np.ones((4, 3), dtype=np.float32)
    first = model.predict(obs, deterministic=True)[0]
    assert not model.actor.training and np.array_equal(first, model.predict(obs, deterministic=True)[0])
    model.policy.set_training_mode(True)
    assert model.actor.training and model.actor.features_extractor.net[1].training


@pytest.mark.parametrize("use_value_function", [False, True])
def test_polyak_update_leaves_targets_out_of_autograd(use_value_function):
    # The targets are averaged in place from weights that require grad: recorded by autograd, that would make each
    # target weight a non-leaf tensor with a chain of LerpBackward nodes growing by one per step (it did, and the
    # process's memory grew to ~1 GB on Pendulum through heap fragmentation).
    model = CustomSAC(
        "MlpPolicy", "Pendulum-v1", learning_starts=50, batch_size=32, seed=0, use_value_function=use_value_function
    )
    model.learn(80)
    targets = [model.critic_target] + ([model.policy.value_target] if use_value_function else [])
    for target in targets:
        for name, param in target.named_parameters():
            assert param.is_leaf and param.grad_fn is None and not param.requires_grad, name


def test_exploration_actions_equal_sb3s_predict_path():
    """_sample_action skips predict()'s rescale round trip; the actions and buffer actions stay SB3's."""
    env = gym.wrappers.RescaleAction(
        gym.make("MountainCarContinuous-v0"), min_action=np.float32(-0.5), max_action=np.float32(2.0)
    )
    noise = NormalActionNoise(np.zeros(1), 0.3 * np.ones(1))
    model = CustomSAC("MlpPolicy", env, action_noise=noise, **{**SMALL, "learning_starts": 0})
    model._last_obs = np.random.default_rng(0).uniform(-1, 1, size=(1, 2)).astype(np.float32)
    results = []
    for sample_action in (model._sample_action, partial(OffPolicyAlgorithm._sample_action, model)):
        np.random.seed(0)
        th.manual_seed(0)
        results.append(sample_action(0, noise, 1))
    (action, buffer_action), (sb3_action, sb3_buffer_action) = results
    assert action.shape == sb3_action.shape == (1, 1) and buffer_action.shape == (1, 1)
    np.testing.assert_allclose(action, sb3_action, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(buffer_action, sb3_buffer_action, rtol=1e-6, atol=1e-6)
