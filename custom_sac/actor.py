"""The actor of CustomSAC: a squashed Gaussian, with state-dependent noise (gSDE) as an option."""

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.distributions import StateDependentNoiseDistribution
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import create_mlp
from stable_baselines3.common.type_aliases import PyTorchObs
from torch import nn

from custom_sac.distributions import LOG_STD_MAX, LOG_STD_MIN, squashed_gaussian_sample


class Actor(BasePolicy):
    """
    Squashed-Gaussian actor: an MLP gives the mean of ``u`` and its spread; the action is ``tanh(u)`` in [-1, 1].

    Without gSDE the spread is a state-dependent log std from a second linear head, and each action draws fresh
    noise (see :mod:`custom_sac.distributions`). With gSDE (Raffin et al., 2021, arXiv:2005.05719) the noise is
    ``latent(s) @ E``, where the exploration matrix ``E ~ N(0, sigma^2)`` is drawn by :meth:`reset_noise` and held
    for several steps: the exploration is a smooth function of the state instead of white noise, which is what
    makes it work on real robots and on sparse-reward tasks such as MountainCarContinuous. ``sigma`` is the
    learned parameter ``log_std``. That distribution is SB3's ``StateDependentNoiseDistribution``, used as is.

    :param observation_space: Observation space
    :param action_space: Action space
    :param net_arch: Hidden layer sizes
    :param features_extractor: Network to extract features (``nn.Flatten`` for vector observations)
    :param features_dim: Number of features
    :param activation_fn: Activation function
    :param use_sde: Use gSDE instead of independent Gaussian noise
    :param log_std_init: Initial value of gSDE's ``log_std``
    :param full_std: gSDE: one ``sigma`` per (latent feature, action) pair; ``False``: one per latent feature
    :param use_expln: gSDE: ``sigma = expln(log_std)`` (grows like ``log`` above 0) instead of ``exp``
    :param clip_mean: gSDE: clip the mean of ``u`` to [-clip_mean, clip_mean] (no clipping when 0): ``tanh``
        saturates beyond, where gradients vanish
    :param normalize_images: Whether to divide image observations by 255
    """

    action_space: spaces.Box

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: nn.Module,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        use_sde: bool = False,
        log_std_init: float = -3,
        full_std: bool = True,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        normalize_images: bool = True,
    ):
        super().__init__(
            observation_space,
            action_space,
            features_extractor=features_extractor,
            normalize_images=normalize_images,
            squash_output=True,
        )
        self.net_arch = net_arch
        self.features_dim = features_dim
        self.activation_fn = activation_fn
        self.use_sde = use_sde
        self.log_std_init = log_std_init
        self.full_std = full_std
        self.use_expln = use_expln
        self.clip_mean = clip_mean

        action_dim = get_action_dim(self.action_space)
        self.latent_pi = nn.Sequential(*create_mlp(features_dim, -1, net_arch, activation_fn))
        last_layer_dim = net_arch[-1] if len(net_arch) > 0 else features_dim
        self.action_dist: StateDependentNoiseDistribution | None = None
        self.mu: nn.Module
        self.log_std: nn.Module | nn.Parameter
        if use_sde:
            self.action_dist = StateDependentNoiseDistribution(
                action_dim, full_std=full_std, use_expln=use_expln, learn_features=True, squash_output=True
            )
            self.mu, self.log_std = self.action_dist.proba_distribution_net(
                latent_dim=last_layer_dim, latent_sde_dim=last_layer_dim, log_std_init=log_std_init
            )
            if clip_mean > 0.0:
                self.mu = nn.Sequential(self.mu, nn.Hardtanh(min_val=-clip_mean, max_val=clip_mean))
        else:
            self.mu = nn.Linear(last_layer_dim, action_dim)
            self.log_std = nn.Linear(last_layer_dim, action_dim)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                features_dim=self.features_dim,
                activation_fn=self.activation_fn,
                use_sde=self.use_sde,
                log_std_init=self.log_std_init,
                full_std=self.full_std,
                use_expln=self.use_expln,
                clip_mean=self.clip_mean,
                features_extractor=self.features_extractor,
            )
        )
        return data

    def get_std(self) -> th.Tensor:
        """
        :return: gSDE's ``sigma``, the standard deviation of the exploration matrix's entries
        """
        if self.action_dist is None:
            raise RuntimeError("get_std() is only available when using gSDE")
        return self.action_dist.get_std(self.log_std)  # type: ignore[arg-type]

    def reset_noise(self, batch_size: int = 1) -> None:
        """
        Draw new exploration matrices (gSDE): one shared one, and one per env for ``batch_size`` envs.

        :param batch_size: Number of envs acting with the actor
        """
        if self.action_dist is None:
            raise RuntimeError("reset_noise() is only available when using gSDE")
        self.action_dist.sample_weights(self.log_std, batch_size=batch_size)  # type: ignore[arg-type]

    def get_action_dist_params(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor, dict[str, th.Tensor]]:
        """
        :param obs: Observation
        :return: Mean of ``u``, its log std (gSDE: the parameter ``log_std``) and, for gSDE, the latent features
            the noise is a function of
        """
        latent_pi = self.latent_pi(self.extract_features(obs, self.features_extractor))
        mean = self.mu(latent_pi)
        if self.use_sde:
            return mean, self.log_std, dict(latent_sde=latent_pi)  # type: ignore[return-value]
        # Clamping (rather than a tanh rescale) is what the original SAC code and SB3 do.
        return mean, th.clamp(self.log_std(latent_pi), LOG_STD_MIN, LOG_STD_MAX), {}  # type: ignore[operator]

    def action_log_prob(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """
        :param obs: Observation
        :return: A reparameterised squashed action in [-1, 1] and its log-probability, shape (batch,)
        """
        mean, log_std, kwargs = self.get_action_dist_params(obs)
        if self.action_dist is not None:
            return self.action_dist.log_prob_from_params(mean, log_std, **kwargs)
        return squashed_gaussian_sample(mean, log_std)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        mean, log_std, kwargs = self.get_action_dist_params(obs)
        if self.action_dist is not None:
            return self.action_dist.actions_from_params(mean, log_std, deterministic=deterministic, **kwargs)
        if deterministic:
            return th.tanh(mean)
        # Same noise stream as the training samples; the log-prob is not needed to act.
        return th.tanh(mean + th.empty_like(mean).normal_() * log_std.exp())

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self(observation, deterministic)
