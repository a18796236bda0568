"""The soft state value V(s) of the first SAC paper (``use_value_function=True``), against a step written here.

SB3 has no V(s), so the reference is one gradient step of SAC v1 written out below from the paper's equations with
plain torch (``torch.distributions.Normal`` for the log-density, the naive tanh correction, a new Adam per network),
on copies of the model's networks: the same weights, batch and noise in, the same losses and parameters out.
"""

import copy

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import configure
from torch.nn import functional as F

from custom_sac import CustomSAC

LR, TAU, GAMMA = 1e-3, 0.05, 0.97


def make_model(ent_coef: str | float) -> CustomSAC:
    model = CustomSAC(
        "MlpPolicy",
        "Pendulum-v1",
        use_value_function=True,
        ent_coef=ent_coef,
        learning_rate=LR,
        tau=TAU,
        gamma=GAMMA,
        batch_size=32,
        learning_starts=0,
        seed=0,
        policy_kwargs=dict(net_arch=[16, 16]),
    )
    rng = np.random.default_rng(0)
    for _ in range(200):
        obs = rng.uniform(-1, 1, (1, 3))
        model.replay_buffer.add(
            obs, obs + 0.1, rng.uniform(-1, 1, (1, 1)), rng.normal(size=1), rng.random(1) < 0.2, [{}]
        )
    model.set_logger(configure(None, []))
    return model


def adam_step(params: list[th.Tensor], loss: th.Tensor) -> None:
    optimizer = th.optim.Adam(params, lr=LR)
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()


def reference_step(model: CustomSAC, seed: int) -> dict[str, object]:
    """One SAC v1 step from the paper, on copies of ``model``'s networks; returns the losses and new weights."""
    actor, critic = copy.deepcopy(model.actor), copy.deepcopy(model.critic)
    value, value_target = copy.deepcopy(model.policy.value_net), copy.deepcopy(model.policy.value_target)
    np.random.seed(seed)
    th.manual_seed(seed)
    data = model.replay_buffer.sample(model.batch_size)

    mean, log_std, _ = actor.get_action_dist_params(data.observations)
    u = mean + log_std.exp() * th.empty_like(mean).normal_()
    log_pi = (th.distributions.Normal(mean, log_std.exp()).log_prob(u) - th.log(1 - th.tanh(u) ** 2)).sum(-1, True)
    out: dict[str, object] = {}
    if isinstance(model.ent_coef, float):
        alpha = th.tensor(model.ent_coef)
    else:
        log_alpha = model.log_ent_coef.detach().clone().requires_grad_()
        alpha = log_alpha.detach().exp()
        ent_coef_loss = -(log_alpha * (log_pi + model.target_entropy).detach()).mean()
        adam_step([log_alpha], ent_coef_loss)
        out.update(ent_coef_loss=ent_coef_loss.item(), log_ent_coef=log_alpha.detach())
    out["ent_coef"] = alpha.item()

    with th.no_grad():  # J_Q: Q regresses on r + gamma * V_target(s')
        y = data.rewards + GAMMA * (1 - data.dones) * value_target(data.next_observations)
    q = critic(data.observations, data.actions)
    critic_loss = sum(0.5 * F.mse_loss(q[i], y) for i in range(q.shape[0]))
    adam_step(list(critic.parameters()), critic_loss)

    min_q_pi = critic(data.observations, th.tanh(u)).min(dim=0).values
    actor_loss = (alpha * log_pi - min_q_pi).mean()  # J_pi, through the critics just updated
    value_loss = 0.5 * F.mse_loss(value(data.observations), (min_q_pi - alpha * log_pi).detach())  # J_V
    adam_step(list(value.parameters()), value_loss)
    adam_step(list(actor.parameters()), actor_loss)
    with th.no_grad():
        for target, online in zip(value_target.parameters(), value.parameters()):
            target.mul_(1 - TAU).add_(TAU * online)
    out.update(critic_loss=critic_loss.item(), actor_loss=actor_loss.item(), value_loss=value_loss.item())
    out.update(actor=actor, critic=critic, value=value, value_target=value_target)
    return out


@pytest.mark.parametrize("ent_coef", ["auto", 0.2])
def test_one_step_equals_the_papers_step_written_out(ent_coef):
    model = make_model(ent_coef)
    expected = reference_step(model, seed=3)
    target_critics = copy.deepcopy(model.critic_target.state_dict())
    np.random.seed(3)
    th.manual_seed(3)
    model.train(gradient_steps=1, batch_size=model.batch_size)

    logged = model.logger.name_to_value
    for key in ("critic_loss", "actor_loss", "value_loss", "ent_coef", "ent_coef_loss"):
        if key in expected:
            assert logged[f"train/{key}"] == pytest.approx(expected[key], rel=1e-5, abs=1e-6), key
    networks = dict(actor=model.actor, critic=model.critic, value=model.policy.value_net)
    networks["value_target"] = model.policy.value_target
    for name, network in networks.items():
        for (param_name, got), want in zip(network.named_parameters(), expected[name].parameters()):
            th.testing.assert_close(
                got, want, rtol=1e-5, atol=1e-6, msg=lambda m, n=f"{name}.{param_name}": f"{n}: {m}"
            )
    if ent_coef == "auto":
        th.testing.assert_close(model.log_ent_coef.detach(), expected["log_ent_coef"])
    # the critics' target comes from V's target: the target critics are not used, and stay where they were
    for key, value in model.critic_target.state_dict().items():
        assert th.equal(value, target_critics[key]), key
