"""The written-out backward passes (custom_sac/backprop.py) against autograd, piece by piece and step by step."""

import copy
import warnings

import gymnasium as gym
import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import configure
from stable_baselines3.common.torch_layers import NatureCNN
from torch.nn import functional as F

from custom_sac import CustomSAC, backprop
from custom_sac.distributions import squashed_gaussian, squashed_gaussian_backward
from custom_sac.policies import Actor

CLOSE = dict(rtol=1e-5, atol=1e-6)


def test_squashed_gaussian_backward_matches_autograd():
    gen = th.Generator().manual_seed(0)
    mean = (th.randn(64, 3, generator=gen) * 4).requires_grad_()  # |u| up to ~15: far into the tanh's tails
    log_std = th.randn(64, 3, generator=gen).requires_grad_()
    noise = th.randn(64, 3, generator=gen)
    grad_action, grad_log_prob = th.randn(64, 3, generator=gen), th.randn(64, generator=gen)

    action, log_prob, std = squashed_gaussian(mean, log_std, noise)
    expected = th.autograd.grad((action * grad_action).sum() + (log_prob * grad_log_prob).sum(), [mean, log_std])
    ours = squashed_gaussian_backward(grad_action, grad_log_prob, action.detach(), noise, std.detach())
    for got, want in zip(ours, expected):
        th.testing.assert_close(got, want, **CLOSE)


def make_model(cls: type[CustomSAC] = CustomSAC, **kwargs) -> CustomSAC:
    kwargs = dict(learning_rate=1e-3, batch_size=64, learning_starts=0, policy_kwargs=dict(net_arch=[32, 32])) | kwargs
    model = cls("MlpPolicy", "Pendulum-v1", seed=0, **kwargs)
    rng = np.random.default_rng(0)
    for _ in range(300):
        obs = rng.uniform(-2, 2, (1, 3))
        model.replay_buffer.add(
            obs, obs + 0.1, rng.uniform(-1, 1, (1, 1)), rng.normal(size=1), rng.random(1) < 0.1, [{}]
        )
    model.set_logger(configure(None, []))
    return model


def with_autograd_copy(manual: CustomSAC) -> tuple[CustomSAC, CustomSAC]:
    """The model (taking the written-out step) and an exact copy of it that takes the autograd step."""
    assert manual._manual_backward
    manual._fast_path_checked = True  # the written-out step itself from the first step on, without its self-check
    reference = copy.deepcopy(manual)
    reference._manual_backward = False
    return manual, reference


def two_paths(**kwargs) -> tuple[CustomSAC, CustomSAC]:
    return with_autograd_copy(make_model(**kwargs))


def train_both(models: tuple[CustomSAC, CustomSAC], seed: int, gradient_steps: int) -> None:
    """The same replay batches and the same noise for both models."""
    for model in models:
        np.random.seed(seed)
        th.manual_seed(seed)
        model.train(gradient_steps=gradient_steps, batch_size=model.batch_size)


CASES = {
    "default": {},
    "three-critics-uneven-arch": dict(policy_kwargs=dict(net_arch=dict(pi=[16], qf=[24, 40, 8]), n_critics=3)),
    "no-hidden-layers": dict(policy_kwargs=dict(net_arch=[])),
    "fixed-ent-coef": dict(ent_coef=0.3),
    "one-critic": dict(policy_kwargs=dict(net_arch=[32, 32], n_critics=1)),
}


@pytest.mark.parametrize("case", list(CASES))
def test_gradient_steps_match_autograd(case):
    """Same state, batch and noise: the same gradients, parameters, Adam states and losses after every step."""
    manual, reference = two_paths(**CASES[case])
    for seed in range(5):
        train_both((manual, reference), seed, gradient_steps=2)
        for (name, p), q in zip(manual.policy.named_parameters(), reference.policy.parameters()):
            th.testing.assert_close(p, q, **CLOSE, msg=lambda m, n=name: f"{n}: {m}")
            if p.grad is not None:
                th.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6, msg=lambda m, n=name: f"{n}.grad: {m}")
        for opt_m, opt_r in (
            (manual.actor.optimizer, reference.actor.optimizer),
            (manual.critic.optimizer, reference.critic.optimizer),
        ):
            for p, q in zip(opt_m.param_groups[0]["params"], opt_r.param_groups[0]["params"]):
                for key in ("exp_avg", "exp_avg_sq"):
                    th.testing.assert_close(opt_m.state[p][key], opt_r.state[q][key], **CLOSE)
        for key, value in reference.logger.name_to_value.items():
            if key.startswith("train/"):
                assert manual.logger.name_to_value[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key


def test_clamped_log_std_passes_no_gradient():
    """With log std straddling its upper bound of 2, only the unclamped samples move the log-std head."""
    manual, reference = two_paths()
    for model in (manual, reference):
        with th.no_grad():
            model.actor.log_std.bias.fill_(2.0)
    train_both((manual, reference), seed=0, gradient_steps=1)
    raw = reference.actor.log_std(reference.actor.latent_pi(reference.replay_buffer.sample(64).observations))
    assert (raw > 2).any() and (raw < 2).any()
    for p, q in zip(manual.actor.log_std.parameters(), reference.actor.log_std.parameters()):
        th.testing.assert_close(p.grad, q.grad, rtol=1e-4, atol=1e-6)


@pytest.mark.parametrize("n_critics", [1, 2, 3])
def test_min_q_backward_split_and_dense_agree_with_autograd(n_critics):
    model = make_model(policy_kwargs=dict(net_arch=[32, 32], n_critics=n_critics))
    layers = backprop.linear_layers(model.critic.q_net)
    data = model.replay_buffer.sample(64)
    obs = model.critic.extract_features(data.observations, model.critic.features_extractor)
    actions = data.actions.clone().requires_grad_()
    grad_min_q = th.randn(64, 1, device=model.device)

    min_q = model.critic(data.observations, actions).min(dim=0).values
    (expected,) = th.autograd.grad((min_q * grad_min_q).sum(), actions)
    with th.no_grad():
        q, inputs = backprop.critic_forward(layers, obs, data.actions)
        argmin = q.min(dim=0).indices
        for split in (True, False):
            got = backprop.min_q_backward(layers, inputs, argmin, grad_min_q, 1, split_by_critic=split)
            th.testing.assert_close(got, expected, **CLOSE)


@pytest.mark.parametrize("compile_step", [False, True])
def test_gradients_have_their_parameters_strides(compile_step):
    """CUDA's fused Adam refuses a gradient whose strides differ from its parameter's, even along a size-1 axis
    (the one-output critic head); the CPU's accepts it, so this is checked here, where no GPU is."""
    model = make_model(compile_step=compile_step)
    model._fast_path_checked = True
    model.train(gradient_steps=2, batch_size=model.batch_size)
    trained = [(name, p) for name, p in model.policy.named_parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for _, p in trained)
    for name, p in trained:
        assert p.grad.stride() == p.stride(), (name, p.stride(), p.grad.stride())


class ScaledActor(Actor):
    """A user's actor subclass: its forward may differ from Actor's, so the written-out passes must not apply."""


def test_applies_only_where_the_networks_allow_it():
    assert CustomSAC("MlpPolicy", "Pendulum-v1")._manual_backward
    assert not CustomSAC("MlpPolicy", "Pendulum-v1", manual_backward=False)._manual_backward
    assert not CustomSAC("MlpPolicy", "Pendulum-v1", use_value_function=True)._manual_backward
    assert not CustomSAC("MlpPolicy", "Pendulum-v1", use_sde=True)._manual_backward  # gSDE: autograd
    tanh = dict(activation_fn=th.nn.Tanh)
    assert not CustomSAC("MlpPolicy", "Pendulum-v1", policy_kwargs=tanh)._manual_backward
    model = CustomSAC("MlpPolicy", "Pendulum-v1")
    model.policy.actor.__class__ = ScaledActor
    assert not backprop.supports_manual_backward(model.policy)
    cnn = CustomSAC("MlpPolicy", ImageEnv(), buffer_size=100, policy_kwargs=dict(features_extractor_class=NatureCNN))
    assert not cnn._manual_backward  # the CNN has parameters: autograd trains it


class ImageEnv(gym.Env):
    """Image observations, for a features extractor with parameters."""

    observation_space = gym.spaces.Box(0, 255, (36, 36, 3), np.uint8)
    action_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action):
        return self.observation_space.sample(), 0.0, False, False, {}


class DictPendulum(gym.ObservationWrapper):
    """Pendulum-v1 with its observation split into a ``Dict``: the features are a concatenation, no parameters."""

    def __init__(self):
        super().__init__(gym.make("Pendulum-v1"))
        box = self.env.observation_space
        self.observation_space = gym.spaces.Dict(
            angle=gym.spaces.Box(box.low[:2], box.high[:2]), velocity=gym.spaces.Box(box.low[2:], box.high[2:])
        )

    def observation(self, obs):
        return {"angle": obs[:2], "velocity": obs[2:]}


def test_dict_observations_take_the_written_out_step():
    model = CustomSAC("MultiInputPolicy", DictPendulum(), learning_starts=50, batch_size=32, seed=0)
    model.learn(80)  # acting from dict observations goes through SB3's predict()
    manual, reference = with_autograd_copy(model)
    train_both((manual, reference), seed=1, gradient_steps=3)
    for p, q in zip(manual.policy.parameters(), reference.policy.parameters()):
        th.testing.assert_close(p, q, **CLOSE)


def test_the_written_out_step_checks_itself_and_keeps_the_written_out_result():
    checked, reference = make_model(), make_model()
    reference._fast_path_checked = True  # the written-out step alone, unchecked
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the two steps agree: no warning
        train_both((checked, reference), seed=0, gradient_steps=2)
    assert checked._fast_path_checked and checked._manual_backward
    # the check leaves the written-out step's result (weights, Adam, random generator) and nothing else, so a run
    # is the same whether or not a learn() call began at a given step (exact resume)
    for p, q in zip(checked.policy.parameters(), reference.policy.parameters()):
        assert th.equal(p, q)
    assert th.equal(checked.log_ent_coef, reference.log_ent_coef)


class HuberCritic(CustomSAC):
    """A user's subclass with another critic loss: the written-out gradient (of the squared error) no longer fits."""

    def critic_loss(self, current_q: th.Tensor, target_q: th.Tensor) -> th.Tensor:
        return F.smooth_l1_loss(current_q, target_q.expand_as(current_q)) * current_q.shape[0]


def test_an_overridden_loss_turns_the_written_out_step_off():
    changed, autograd = make_model(HuberCritic), make_model(HuberCritic, manual_backward=False)
    with pytest.warns(UserWarning, match="disagrees"):
        train_both((changed, autograd), seed=0, gradient_steps=1)
    assert not changed._manual_backward
    for seed in range(1, 4):
        train_both((changed, autograd), seed=seed, gradient_steps=2)
    for p, q in zip(changed.policy.parameters(), autograd.policy.parameters()):
        assert th.equal(p, q)  # the loss that runs is the one written in HuberCritic


def test_a_loss_edited_in_place_is_caught_at_the_next_learn(monkeypatch):
    model = make_model()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        model.learn(2)
    assert model._manual_backward
    actor_loss = CustomSAC.actor_loss
    monkeypatch.setattr(CustomSAC, "actor_loss", lambda self, *args: 2.0 * actor_loss(self, *args))
    with pytest.warns(UserWarning, match="disagrees"):
        model.learn(2)
    assert not model._manual_backward


def test_the_compiled_step_matches_the_eager_step_and_compiles_once(tmp_path):
    """
    ``compile_step=True``: the step compiled by torch.compile gives the eager step's numbers (same state, batches
    and noise), a learning-rate schedule does not recompile it, and the option survives save and load.
    """
    schedule = dict(learning_rate=lambda progress: 1e-3 * progress)
    compiled, eager = make_model(compile_step=True, **schedule), make_model(**schedule)
    for model in (compiled, eager):
        model._fast_path_checked = True  # both take their written-out step from the first step on
    graphs = []
    for seed in range(4):
        for model in (compiled, eager):
            model._current_progress_remaining = 1.0 - seed / 4  # a new learning rate at every train() call
        train_both((compiled, eager), seed, gradient_steps=3)
        graphs.append(th._dynamo.utils.counters["stats"]["unique_graphs"])
    for (name, p), q in zip(compiled.policy.named_parameters(), eager.policy.parameters()):
        th.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
    assert compiled.actor.optimizer.param_groups[0]["lr"] == pytest.approx(1e-3 / 4)
    assert graphs[1:] == graphs[:1] * 3, graphs  # compiled in the first train() call only
    compiled.save(tmp_path / "compiled.zip")
    assert CustomSAC.load(tmp_path / "compiled.zip")._compiled_step is not None


@pytest.mark.skipif(not th.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_the_step_replayed_as_cuda_graphs_matches_the_eager_step():
    """``compile_step="cudagraphs"``: the same numbers as the eager step, losses included, across several
    ``train()`` calls of several steps each."""
    replayed, eager = make_model(compile_step="cudagraphs", device="cuda"), make_model(device="cuda")
    for model in (replayed, eager):
        model._fast_path_checked = True
    for seed in range(4):
        train_both((replayed, eager), seed, gradient_steps=3)
        for key, value in eager.logger.name_to_value.items():
            assert replayed.logger.name_to_value[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for (name, p), q in zip(replayed.policy.named_parameters(), eager.policy.parameters()):
        th.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
