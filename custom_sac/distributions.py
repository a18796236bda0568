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
    return squashed_gaussian(mean, log_std, th.empty_like(mean).normal_())


def squashed_gaussian(mean: th.Tensor, log_std: th.Tensor, noise: th.Tensor) -> tuple[th.Tensor, th.Tensor]:
    """
    ``a = tanh(mu + sigma * noise)`` and ``log pi(a|s)`` for given standard-normal noise.

    :return: action, shape (batch, action_dim), and log-probability, shape (batch,)
    """
    u = mean + noise * log_std.exp()
    log_prob = (gaussian_log_prob(noise, log_std) - log_one_minus_tanh_sq(u)).sum(dim=-1)
    return th.tanh(u), log_prob
