"""The squashed Gaussian against SB3's SquashedDiagGaussianDistribution and against float64 truth."""

import math

import pytest
import torch as th
from stable_baselines3.common.distributions import SquashedDiagGaussianDistribution

from custom_sac.distributions import (
    log_one_minus_tanh_sq,
    squashed_gaussian,
    squashed_gaussian_sample,
)


def reference_log_prob(u: th.Tensor, mean: th.Tensor, log_std: th.Tensor) -> th.Tensor:
    """The change-of-variables density in float64, with 1 - tanh(u)^2 = 1 / cosh(u)^2 (no cancellation)."""
    u, mean, log_std = u.double(), mean.double(), log_std.double()
    gauss = -0.5 * ((u - mean) / log_std.exp()) ** 2 - log_std - 0.5 * math.log(2 * math.pi)
    return (gauss + 2 * th.log(th.cosh(u))).sum(-1)


def test_correction_is_exact_identity():
    u = th.linspace(-30, 30, 6001, dtype=th.float64)
    # 1e-8, not 1e-15: torch's softplus returns x itself for x > 20, an error of log(1 + e^-20) ~ 2e-9
    th.testing.assert_close(log_one_minus_tanh_sq(u), -2 * th.log(th.cosh(u)), rtol=1e-8, atol=1e-8)
    u32 = u.float()
    th.testing.assert_close(
        log_one_minus_tanh_sq(u32).double(), -2 * th.log(th.cosh(u32.double())), rtol=1e-6, atol=1e-5
    )


def test_correction_stays_finite_where_naive_form_fails():
    u = th.tensor([10.0, 20.0, 50.0, -50.0])
    naive = th.log(1 - th.tanh(u) ** 2)
    assert th.isinf(naive).all()  # float32 rounds tanh(u)^2 to 1
    ours = log_one_minus_tanh_sq(u)
    # for large |u|: 1 - tanh^2 = 4 e^{-2|u|} (1 + O(e^{-2|u|})), so the log tends to 2 log 2 - 2|u|
    th.testing.assert_close(ours, 2 * math.log(2) - 2 * u.abs(), rtol=1e-6, atol=1e-5)


@pytest.mark.parametrize("scale", [0.5, 2.0, 4.0])
def test_sample_and_log_prob_match_sb3(scale):
    th.manual_seed(0)
    mean = th.randn(512, 3) * scale
    log_std = th.rand(512, 3) * 2 - 1
    sb3 = SquashedDiagGaussianDistribution(3, epsilon=0.0)

    th.manual_seed(1)
    action_sb3, log_prob_sb3 = sb3.log_prob_from_params(mean, log_std)
    th.manual_seed(1)
    action, log_prob = squashed_gaussian_sample(mean, log_std)

    th.testing.assert_close(action, action_sb3)  # the same noise stream, the same squash
    u = sb3.gaussian_actions
    truth = reference_log_prob(u, mean, log_std)
    error_ours = (log_prob.double() - truth).abs().max()
    error_sb3 = (log_prob_sb3.double() - truth).abs().max()
    assert error_ours < 1e-4
    # ours is never worse than SB3's float32 evaluation, and far better near the bounds
    assert error_ours <= error_sb3 + 1e-5


def test_log_prob_near_bounds_is_exact_while_sb3_is_not():
    mean = th.tensor([[8.0, -9.0]])
    log_std = th.tensor([[-3.0, -3.0]])
    u = mean.clone()  # |u| where tanh(u) rounds to +-1 in float32
    _, ours = squashed_gaussian(mean, log_std, th.zeros_like(mean))  # no noise: u = mean
    truth = reference_log_prob(u, mean, log_std)
    th.testing.assert_close(ours.double(), truth, rtol=1e-6, atol=1e-4)
    sb3 = SquashedDiagGaussianDistribution(2)  # default epsilon 1e-6 keeps it finite but biased
    sb3.proba_distribution(mean, log_std)
    sb3_value = sb3.log_prob(th.tanh(u), u)
    assert (sb3_value.double() - truth).abs().item() > 1.0


def test_zero_noise_gives_tanh_of_mean():
    mean, log_std = th.randn(4, 2), th.zeros(4, 2)
    action, log_prob = squashed_gaussian(mean, log_std, th.zeros_like(mean))
    th.testing.assert_close(action, th.tanh(mean))
    th.testing.assert_close(log_prob.double(), reference_log_prob(mean, mean, log_std), rtol=1e-5, atol=1e-5)


def test_gradients_through_the_sample_match_float64_reference():
    """Reparameterised gradients of the sample and its log-prob against autograd on the float64 formula."""
    gen = th.Generator().manual_seed(0)
    mean = (th.randn(64, 3, generator=gen) * 3).requires_grad_()
    log_std = (th.rand(64, 3, generator=gen) * 2 - 1.5).requires_grad_()
    th.manual_seed(1)
    action, log_prob = squashed_gaussian_sample(mean, log_std)
    (action.sum() + log_prob.sum()).backward()

    th.manual_seed(1)
    noise = th.empty(64, 3).normal_().double()  # the same draw as the sample's
    mean64, log_std64 = mean.detach().double().requires_grad_(), log_std.detach().double().requires_grad_()
    u = mean64 + log_std64.exp() * noise
    (th.tanh(u).sum() + reference_log_prob(u, mean64, log_std64).sum()).backward()
    th.testing.assert_close(mean.grad.double(), mean64.grad, rtol=1e-5, atol=1e-5)
    th.testing.assert_close(log_std.grad.double(), log_std64.grad, rtol=1e-5, atol=1e-5)
