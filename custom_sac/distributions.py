"""The squashed Gaussian policy distribution of SAC, written out in full.

The actor outputs the mean ``mu`` and the log standard deviation ``log_std`` of a Gaussian over an *unbounded*
variable ``u``. The action is ``a = tanh(u)``, which lies in (-1, 1); SB3 then rescales it to the env's
``[low, high]`` outside the policy (``policy.unscale_action``). That rescaling is an affine map with a constant
Jacobian, so it shifts every log-probability by the same constant and changes no gradient: it is left out.

Why the log-probability is taken *before* the bound: the density of ``a`` follows from the density of ``u`` by the
change of variables ``log pi(a|s) = log N(u; mu, sigma) - sum_i log(1 - tanh(u_i)^2)``, which needs ``u`` itself.
Recovering ``u`` from ``a`` with ``atanh`` is ill-conditioned near |a| = 1, so we keep ``u`` from the sample.
This is also why the raw samples ``u`` fall outside the action bounds: only ``tanh(u)`` is bounded.
"""

import math

import torch as th
from torch.nn import functional as F

# log(sqrt(2 * pi)), the constant of the Gaussian log-density
_HALF_LOG_2PI = 0.5 * math.log(2.0 * math.pi)
_LOG_2 = math.log(2.0)

# Bounds on the state-dependent log standard deviation (as in the original SAC code and in SB3):
# exp(-20) keeps sigma strictly positive, exp(2) keeps exploration noise within a sane range.
LOG_STD_MIN = -20.0
LOG_STD_MAX = 2.0


def log_one_minus_tanh_sq(u: th.Tensor) -> th.Tensor:
    """
    ``log(1 - tanh(u)^2)`` computed without cancellation.

    ``1 - tanh(u)^2 = 4 / (e^u + e^-u)^2``, so ``log(1 - tanh(u)^2) = 2 * (log 2 - |u| - log(1 + e^(-2|u|)))``,
    and since the expression is even in ``u`` the absolute value can be dropped in favour of softplus:
    ``2 * (log 2 - u - softplus(-2u))``. The naive form rounds ``tanh(u)^2`` to 1 once |u| > ~9 in float32 and
    returns ``-inf``; this one stays exact (it tends to ``2 * (log 2 - |u|)``) with no epsilon needed.

    :param u: pre-squash Gaussian sample
    :return: element-wise ``log(1 - tanh(u)^2)``
    """
    return 2.0 * (_LOG_2 - u - F.softplus(-2.0 * u))


def gaussian_log_prob(noise: th.Tensor, log_std: th.Tensor) -> th.Tensor:
    """
    Log-density of ``u = mu + sigma * noise`` under ``N(mu, sigma)``, per dimension.

    With ``(u - mu) / sigma = noise`` the log-density is ``-noise^2 / 2 - log sigma - log sqrt(2 pi)``; written in
    terms of the noise it needs no division by sigma.
    """
    return -0.5 * noise.pow(2) - log_std - _HALF_LOG_2PI


def squashed_gaussian_sample(mean: th.Tensor, log_std: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """
    Reparameterised sample ``a = tanh(mu + sigma * eps)`` with its log-probability.

    The noise is drawn with ``normal_`` on a tensor shaped like ``mean``, the same random stream SB3's
    ``SquashedDiagGaussianDistribution`` consumes, so equal seeds give equal samples.

    :param mean: Gaussian mean, shape (batch, action_dim)
    :param log_std: Gaussian log standard deviation (already clamped), same shape
    :return: squashed action in (-1, 1), shape (batch, action_dim), and ``log pi(a|s)``, shape (batch,)
    """
    action, log_prob, _ = squashed_gaussian(mean, log_std, th.empty_like(mean).normal_())
    return action, log_prob


def squashed_gaussian(mean: th.Tensor, log_std: th.Tensor, noise: th.Tensor) -> tuple[th.Tensor, th.Tensor, th.Tensor]:
    """
    ``a = tanh(mu + sigma * noise)`` and ``log pi(a|s)`` for given standard-normal noise.

    :return: action, log-probability (shape (batch,)) and ``sigma``, which the backward pass reuses
    """
    std = log_std.exp()
    u = mean + noise * std
    log_prob = (gaussian_log_prob(noise, log_std) - log_one_minus_tanh_sq(u)).sum(dim=-1)
    return th.tanh(u), log_prob, std


def squashed_gaussian_backward(
    grad_action: th.Tensor, grad_log_prob: th.Tensor, action: th.Tensor, noise: th.Tensor, std: th.Tensor
) -> tuple[th.Tensor, th.Tensor]:
    """
    Gradients of a loss w.r.t. ``mean`` and ``log_std`` from its gradients w.r.t. the sample and its log-prob,
    with the noise held fixed (the reparameterisation trick). With ``u = mean + std * noise`` and ``a = tanh(u)``:

    - ``da/du = 1 - a^2`` and ``d log pi / du = -d/du log(1 - tanh(u)^2) = 2 tanh(u) = 2a``
    - ``du/dmean = 1`` and ``du/dlog_std = noise * std``, while the Gaussian's ``-log sigma`` term adds
      ``d log pi / dlog_std = -1`` directly (its ``-noise^2 / 2`` term does not move: the noise is fixed)

    :param grad_action: gradient w.r.t. the action, shape (batch, action_dim)
    :param grad_log_prob: gradient w.r.t. the log-probability, shape (batch,)
    :param action: the sampled action ``tanh(u)``
    :param noise: the standard-normal noise of the sample
    :param std: ``exp(log_std)``
    :return: gradients w.r.t. ``mean`` and ``log_std``, each shaped like ``mean``
    """
    grad_log_prob = grad_log_prob.unsqueeze(-1)
    grad_u = grad_action * (1.0 - action.square()) + grad_log_prob * (2.0 * action)
    return grad_u, grad_u * noise * std - grad_log_prob


def squashed_gaussian_log_prob(u: th.Tensor, mean: th.Tensor, log_std: th.Tensor) -> th.Tensor:
    """
    ``log pi(tanh(u) | s)`` for a given pre-squash value ``u`` (for evaluating stored or external samples).

    :param u: pre-squash value, shape (batch, action_dim)
    :param mean: Gaussian mean
    :param log_std: Gaussian log standard deviation
    :return: log-probability of ``tanh(u)``, shape (batch,)
    """
    noise = (u - mean) * th.exp(-log_std)
    return (gaussian_log_prob(noise, log_std) - log_one_minus_tanh_sq(u)).sum(dim=-1)
