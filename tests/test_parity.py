"""CustomSAC against SB3's SAC: same weights and same batches in, same losses and same parameters out.

Both models share one replay buffer, and before each ``train()`` call the numpy and torch generators are reseeded
identically, so both sample the same batch indices and the same policy noise. Remaining differences come from
float rounding only: the critics run as one batched matmul, Adam is fused, Polyak is a lerp, and the tanh correction
is the exact ``2 * (log 2 - u - softplus(-2u))``. SB3 writes it as ``log(1 - tanh(u)^2 + 1e-6)``: that epsilon is
a real difference in the math (up to 1e-2 in log-prob near the bounds), so the test sets SB3's epsilon to 0 and
compares the same function. ``test_sb3_epsilon_is_the_only_difference`` shows what the epsilon changes.
"""

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3 import SAC
from stable_baselines3.common.distributions import SquashedDiagGaussianDistribution
from stable_baselines3.common.logger import configure

from custom_sac import CustomSAC
from custom_sac.sb3_compat import ensemble_state_from_sb3, load_sb3_sac_weights

RTOL, ATOL = 1e-5, 1e-6
# The logged actor and entropy losses hold the batch mean of log pi. In float32, SB3's naive log(1 - tanh(u)^2)
# loses digits as tanh(u)^2 -> 1 (an error of about 6e-8 / (1 - tanh(u)^2): 1e-3 for one sample at |u| = 6),
# while the stable form does not, so these two means get a looser 1e-4; test_distributions.py checks our
# log-prob against float64. Parameters and optimizer states are held to RTOL.
LOG_PI_RTOL = 1e-4


class SpacesEnv(gym.Env):
    """An env that only carries spaces: the parity tests feed the replay buffer directly."""

    def __init__(self, observation_space: gym.spaces.Box, action_space: gym.spaces.Box):
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


def make_env(name: str, dtype: type = np.float32) -> SpacesEnv:
    if name == "pendulum":  # Pendulum-v1's spaces
        high = np.array([1.0, 1.0, 8.0], dtype)
        return SpacesEnv(gym.spaces.Box(-high, high, dtype=dtype), gym.spaces.Box(-2.0, 2.0, (1,), dtype=dtype))
    # a 3-dim action space with asymmetric bounds
    action_space = gym.spaces.Box(np.array([-1.0, 0.0, -2.0], dtype), np.array([2.0, 1.0, 0.5], dtype), dtype=dtype)
    return SpacesEnv(gym.spaces.Box(-5.0, 5.0, (5,), dtype=dtype), action_space)


def make_pair(
    env: str | gym.Env,
    policy: str = "MlpPolicy",
    sb3_policy: str | type | None = None,
    **kwargs,
) -> tuple[SAC, CustomSAC]:
    """
    SB3's SAC and CustomSAC with the same weights and one replay buffer.
    """
    env_ = make_env(env, np.float32) if isinstance(env, str) else env
    kwargs = dict(learning_rate=1e-3, batch_size=64, learning_starts=0, policy_kwargs=dict(net_arch=[64, 64])) | kwargs
    sb3 = SAC(sb3_policy or policy, env_, seed=0, **copy.deepcopy(kwargs))  # SB3 writes into policy_kwargs
    ours = CustomSAC(policy, env_, seed=1, **copy.deepcopy(kwargs))
    load_sb3_sac_weights(ours, sb3)  # different seeds above: the weights must come from this copy
    if isinstance(sb3.actor.action_dist, SquashedDiagGaussianDistribution):
        sb3.actor.action_dist.epsilon = 0.0  # compare the same log-prob function (see module docstring)

    rng = np.random.default_rng(0)
    obs_space, act_space = sb3.observation_space, sb3.action_space
    obs_space.seed(0)
    for _ in range(500):
        sb3.replay_buffer.add(
            _random_obs(obs_space, rng),
            _random_obs(obs_space, rng),
            rng.uniform(-1, 1, (1, *act_space.shape)),  # buffers hold scaled actions
            rng.normal(size=1),
            rng.random(1) < 0.1,
            [{}],
        )
    ours.replay_buffer = sb3.replay_buffer
    for model in (sb3, ours):
        model.set_logger(configure(None, []))
    return sb3, ours


def _random_obs(space: gym.Space, rng: np.random.Generator):
    """A batch of one observation: uniform in a float Box, else the space's own sample (images, ``Dict``)."""
    if isinstance(space, gym.spaces.Box) and space.dtype == np.float32:
        return rng.uniform(space.low, space.high, (1, *space.shape))
    obs = space.sample()
    return {k: v[None] for k, v in obs.items()} if isinstance(obs, dict) else obs[None]


def train_both(sb3: SAC, ours: CustomSAC, gradient_steps: int, seed: int) -> None:
    for model in (sb3, ours):
        np.random.seed(seed)
        th.manual_seed(seed)
        model.train(gradient_steps=gradient_steps, batch_size=model.batch_size)


def by_name(module: th.nn.Module, optimizer: th.optim.Optimizer) -> dict[str, dict[str, th.Tensor]]:
    """Adam's per-parameter state keyed by parameter name."""
    names = {id(p): n for n, p in module.named_parameters()}
    return {names[id(p)]: optimizer.state[p] for group in optimizer.param_groups for p in group["params"]}


def assert_models_equal(sb3: SAC, ours: CustomSAC, atol: float = ATOL, rtol: float = RTOL) -> None:
    close = dict(rtol=rtol, atol=atol)
    for key, key_rtol in (
        ("train/critic_loss", rtol),
        ("train/ent_coef", rtol),
        ("train/actor_loss", max(rtol, LOG_PI_RTOL)),
        ("train/ent_coef_loss", max(rtol, LOG_PI_RTOL)),
    ):
        if key in sb3.logger.name_to_value:
            expected = sb3.logger.name_to_value[key]
            np.testing.assert_allclose(ours.logger.name_to_value[key], expected, rtol=key_rtol, atol=ATOL, err_msg=key)
    for name, value in sb3.actor.state_dict().items():
        th.testing.assert_close(ours.actor.state_dict()[name], value, **close, msg=lambda m, n=name: f"actor {n}: {m}")
    n = ours.critic.n_critics
    for net_ours, net_sb3 in ((ours.critic, sb3.critic), (ours.critic_target, sb3.critic_target)):
        for name, value in ensemble_state_from_sb3(net_sb3.state_dict(), n).items():
            th.testing.assert_close(net_ours.state_dict()[name], value, **close)
    if sb3.log_ent_coef is not None:
        th.testing.assert_close(ours.log_ent_coef.detach(), sb3.log_ent_coef.detach(), **close)

    for module_ours, module_sb3, convert in (
        (ours.actor, sb3.actor, lambda d: d),
        (ours.critic, sb3.critic, lambda d: ensemble_state_from_sb3(d, n)),
    ):
        state_ours = by_name(module_ours, module_ours.optimizer)
        state_sb3 = by_name(module_sb3, module_sb3.optimizer)
        for key in ("exp_avg", "exp_avg_sq"):
            expected = convert({name: s[key] for name, s in state_sb3.items()})
            assert expected.keys() == state_ours.keys()
            for name, value in expected.items():
                th.testing.assert_close(state_ours[name][key], value, **close)
        assert {float(s["step"]) for s in state_ours.values()} == {float(s["step"]) for s in state_sb3.values()}
    if sb3.ent_coef_optimizer is not None:
        for key in ("exp_avg", "exp_avg_sq"):
            theirs = sb3.ent_coef_optimizer.state[sb3.log_ent_coef][key]
            th.testing.assert_close(ours.ent_coef_optimizer.state[ours.log_ent_coef][key], theirs, **close)


CASES = {
    "pendulum": dict(env="pendulum"),
    "asym-3d": dict(env="asym"),
    "fixed-ent-coef": dict(env="asym", ent_coef=0.2),
    "auto-init-target": dict(env="pendulum", ent_coef="auto_0.1", target_entropy=-0.5),
    "three-critics-dict-arch": dict(
        env="asym", policy_kwargs=dict(net_arch=dict(pi=[32, 48], qf=[64, 32]), n_critics=3)
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_one_then_ten_steps_match_sb3(case):
    sb3, ours = make_pair(**CASES[case])
    train_both(sb3, ours, gradient_steps=1, seed=1)
    assert_models_equal(sb3, ours)
    for seed in range(2, 11):
        train_both(sb3, ours, gradient_steps=1, seed=seed)
    assert_models_equal(sb3, ours)
    assert ours._n_updates == sb3._n_updates == 10


def test_gradient_steps_and_target_update_interval_match_sb3():
    sb3, ours = make_pair("asym", target_update_interval=3, gradient_steps=5, tau=0.05)
    train_both(sb3, ours, gradient_steps=5, seed=3)
    assert_models_equal(sb3, ours)
    train_both(sb3, ours, gradient_steps=5, seed=4)
    assert_models_equal(sb3, ours)
    # the targets really moved (and only on steps 0 and 3 of each call, as in SB3)
    assert not th.equal(ours.critic_target.q_net[0].weight, ours.critic.q_net[0].weight)


def test_sb3_epsilon_is_the_only_difference():
    """With SB3's default epsilon the results differ; this is what the parity tests above control for."""
    sb3, ours = make_pair("asym", ent_coef="auto_0.5")
    sb3.actor.action_dist.epsilon = 1e-6
    train_both(sb3, ours, gradient_steps=1, seed=1)
    ours_loss = ours.logger.name_to_value["train/ent_coef_loss"]
    sb3_loss = sb3.logger.name_to_value["train/ent_coef_loss"]
    assert ours_loss != sb3_loss
    np.testing.assert_allclose(ours_loss, sb3_loss, rtol=1e-3)
