"""Networks of CustomSAC: the squashed-Gaussian actor, the batched critic ensemble, the optional value network."""

import itertools
import math
from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel, BasePolicy
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    create_mlp,
    get_actor_critic_arch,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from custom_sac.distributions import LOG_STD_MAX, LOG_STD_MIN, squashed_gaussian_sample


class Actor(BasePolicy):
    """
    Squashed-Gaussian actor: an MLP gives the mean and the (state-dependent) log std of ``u``; the action is
    ``tanh(u)`` in [-1, 1] (see :mod:`custom_sac.distributions`).

    :param observation_space: Observation space
    :param action_space: Action space
    :param net_arch: Hidden layer sizes
    :param features_extractor: Network to extract features (``nn.Flatten`` for vector observations)
    :param features_dim: Number of features
    :param activation_fn: Activation function
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

        action_dim = get_action_dim(self.action_space)
        self.latent_pi = nn.Sequential(*create_mlp(features_dim, -1, net_arch, activation_fn))
        last_layer_dim = net_arch[-1] if len(net_arch) > 0 else features_dim
        self.mu = nn.Linear(last_layer_dim, action_dim)
        self.log_std = nn.Linear(last_layer_dim, action_dim)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                features_dim=self.features_dim,
                activation_fn=self.activation_fn,
                features_extractor=self.features_extractor,
            )
        )
        return data

    def get_action_dist_params(self, obs: PyTorchObs) -> tuple[th.Tensor, th.Tensor]:
        """
        :param obs: Observation
        :return: Mean and clamped log standard deviation of the pre-squash Gaussian
        """
        latent_pi = self.latent_pi(self.extract_features(obs, self.features_extractor))
        # Clamping (rather than a tanh rescale) is what the original SAC code and SB3 do.
        return self.mu(latent_pi), th.clamp(self.log_std(latent_pi), LOG_STD_MIN, LOG_STD_MAX)

    def action_log_prob(self, obs: PyTorchObs, deterministic: bool = False) -> tuple[th.Tensor, th.Tensor]:
        """
        :param obs: Observation
        :param deterministic: Use the mode instead of a sample
        :return: Squashed action in [-1, 1] and its log-probability, shape (batch,)
        """
        mean, log_std = self.get_action_dist_params(obs)
        return squashed_gaussian_sample(mean, log_std, deterministic)

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        mean, log_std = self.get_action_dist_params(obs)
        if deterministic:
            return th.tanh(mean)
        # Same noise stream as the training samples; the log-prob is not needed to act.
        return th.tanh(mean + th.empty_like(mean).normal_() * log_std.exp())

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self(observation, deterministic)


class EnsembleLinear(nn.Module):
    """
    ``n`` independent linear layers evaluated as one batched matrix product.

    Input (n, batch, in_features) -> output (n, batch, out_features). Weights are stored as (n, in, out) so the
    forward pass is a single ``baddbmm`` instead of ``n`` separate ``addmm`` calls, and each member is initialised
    like ``nn.Linear`` (uniform in +-1/sqrt(in_features)).
    """

    def __init__(self, n: int, in_features: int, out_features: int):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = nn.Parameter(th.empty(n, in_features, out_features))
        self.bias = nn.Parameter(th.empty(n, 1, out_features))
        bound = 1.0 / math.sqrt(in_features)
        nn.init.uniform_(self.weight, -bound, bound)
        nn.init.uniform_(self.bias, -bound, bound)

    def forward(self, x: th.Tensor) -> th.Tensor:
        return ensemble_linear(x, self.weight, self.bias)

    def extra_repr(self) -> str:
        return f"n={self.weight.shape[0]}, in_features={self.in_features}, out_features={self.out_features}"


def ensemble_linear(x: th.Tensor, weight: th.Tensor, bias: th.Tensor) -> th.Tensor:
    """``x @ weight + bias`` for each of the ``n`` members: (n, batch, in) -> (n, batch, out)."""
    if weight.shape[-1] == 1:
        # A batched matrix-vector product (the Q-value head): on CPU, bmm with one output column is ~3x slower
        # than the equivalent multiply-and-sum.
        return (x * weight.transpose(1, 2)).sum(dim=-1, keepdim=True) + bias
    return th.baddbmm(bias, x, weight)


def create_ensemble_mlp(
    n: int, input_dim: int, output_dim: int, net_arch: list[int], activation_fn: type[nn.Module]
) -> nn.Sequential:
    """``n`` MLPs of the same shape as one module of :class:`EnsembleLinear` layers."""
    dims = [input_dim, *net_arch, output_dim]
    layers: list[nn.Module] = []
    for i, (d_in, d_out) in enumerate(itertools.pairwise(dims)):
        layers.append(EnsembleLinear(n, d_in, d_out))
        if i < len(dims) - 2:
            layers.append(activation_fn())
    return nn.Sequential(*layers)


class EnsembleCritic(BaseModel):
    """
    ``n_critics`` Q-networks Q_i(s, a), evaluated together.

    Several critics and their minimum fight the overestimation bias of Q-learning: the actor climbs the critic,
    so it seeks out actions where the critic errs upwards; the minimum of independently initialised critics
    (clipped double Q, from TD3) is a pessimistic estimate that the actor cannot exploit as easily.

    :param observation_space: Observation space
    :param action_space: Action space
    :param net_arch: Hidden layer sizes (the same for each critic)
    :param features_extractor: Network to extract features
    :param features_dim: Number of features
    :param activation_fn: Activation function
    :param normalize_images: Whether to divide image observations by 255
    :param n_critics: Number of critics
    :param share_features_extractor: Whether the features extractor is the actor's (then it is not trained
        by the critic loss)
    """

    features_extractor: BaseFeaturesExtractor

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
        n_critics: int = 2,
        share_features_extractor: bool = False,
    ):
        super().__init__(
            observation_space, action_space, features_extractor=features_extractor, normalize_images=normalize_images
        )
        self.n_critics = n_critics
        self.share_features_extractor = share_features_extractor
        action_dim = get_action_dim(self.action_space)
        self.q_net = create_ensemble_mlp(n_critics, features_dim + action_dim, 1, net_arch, activation_fn)

    def forward(self, obs: th.Tensor, actions: th.Tensor) -> th.Tensor:
        """
        :return: Q-values of every critic, shape (n_critics, batch, 1)
        """
        with th.set_grad_enabled(th.is_grad_enabled() and not self.share_features_extractor):
            features = self.extract_features(obs, self.features_extractor)
        q_input = th.cat([features, actions], dim=1)
        # expand() makes n views of the same input without copying it
        return self.q_net(q_input.expand(self.n_critics, *q_input.shape))


class ValueNetwork(BaseModel):
    """
    Soft state value V(s) of the first SAC paper (Haarnoja et al., 2018, arXiv:1801.01290), optional.

    :param observation_space: Observation space
    :param action_space: Action space (unused by the network, kept for SB3's BaseModel)
    :param net_arch: Hidden layer sizes
    :param features_extractor: Network to extract features
    :param features_dim: Number of features
    :param activation_fn: Activation function
    :param normalize_images: Whether to divide image observations by 255
    """

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        net_arch: list[int],
        features_extractor: BaseFeaturesExtractor,
        features_dim: int,
        activation_fn: type[nn.Module] = nn.ReLU,
        normalize_images: bool = True,
    ):
        super().__init__(
            observation_space, action_space, features_extractor=features_extractor, normalize_images=normalize_images
        )
        self.v_net = nn.Sequential(*create_mlp(features_dim, 1, net_arch, activation_fn))

    def forward(self, obs: th.Tensor) -> th.Tensor:
        return self.v_net(self.extract_features(obs, self.features_extractor))


class CustomSACPolicy(BasePolicy):
    """
    Actor, critics and target critics of CustomSAC (and, optionally, a value network with its target).

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule used to build the optimizers (CustomSAC then sets each
        optimizer's own rate)
    :param net_arch: Hidden layers, a list shared by actor and critics or ``dict(pi=[...], qf=[...])``
    :param activation_fn: Activation function
    :param features_extractor_class: Features extractor to use
    :param features_extractor_kwargs: Keyword arguments for the features extractor
    :param normalize_images: Whether to divide image observations by 255
    :param optimizer_class: The optimizer to use, ``th.optim.Adam`` by default
    :param optimizer_kwargs: Extra optimizer arguments. For Adam and AdamW, ``fused=True`` is added unless
        ``fused`` or ``foreach`` is given: one kernel per step instead of ~10 small ops per parameter tensor (the
        math is Adam's; results agree with the per-tensor loop to float rounding)
    :param n_critics: Number of critics
    :param share_features_extractor: Whether the critic reuses the actor's features extractor
    :param use_value_function: Also build V(s) and its target (SAC v1)
    :param use_sde: Accepted so that policy_kwargs written for SB3's SAC (which adds ``use_sde=False`` to them)
        work unchanged; gSDE itself is not implemented
    """

    actor: Actor
    critic: EnsembleCritic
    critic_target: EnsembleCritic

    def __init__(
        self,
        observation_space: spaces.Space,
        action_space: spaces.Box,
        lr_schedule: Schedule,
        net_arch: list[int] | dict[str, list[int]] | None = None,
        activation_fn: type[nn.Module] = nn.ReLU,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
        use_value_function: bool = False,
        use_sde: bool = False,
    ):
        if use_sde:
            raise ValueError("CustomSAC does not implement gSDE (use_sde=True); use stable_baselines3.SAC for it")
        optimizer_kwargs = dict(optimizer_kwargs or {})
        if optimizer_class in (th.optim.Adam, th.optim.AdamW) and not {"fused", "foreach"} & optimizer_kwargs.keys():
            optimizer_kwargs["fused"] = True
        super().__init__(
            observation_space,
            action_space,
            features_extractor_class,
            features_extractor_kwargs,
            optimizer_class=optimizer_class,
            optimizer_kwargs=optimizer_kwargs,
            squash_output=True,
            normalize_images=normalize_images,
        )
        if net_arch is None:
            net_arch = [256, 256]
        actor_arch, critic_arch = get_actor_critic_arch(net_arch)
        self.net_arch = net_arch
        self.activation_fn = activation_fn
        self.n_critics = n_critics
        self.share_features_extractor = share_features_extractor
        self.use_value_function = use_value_function
        net_args = dict(
            observation_space=self.observation_space,
            action_space=self.action_space,
            activation_fn=activation_fn,
            normalize_images=normalize_images,
        )
        self.actor_kwargs = {**net_args, "net_arch": actor_arch}
        self.critic_kwargs = {**net_args, "net_arch": critic_arch}
        self._build(lr_schedule)
        # Whether any module's forward reads self.training (see set_training_mode)
        self._inert = all(isinstance(m, _MODE_INERT) for m in self.modules())

    def _build(self, lr_schedule: Schedule) -> None:
        lr = lr_schedule(1)
        self.actor = Actor(**self._update_features_extractor(self.actor_kwargs)).to(self.device)
        self.actor.optimizer = self.optimizer_class(self.actor.parameters(), lr=lr, **self.optimizer_kwargs)

        shared = self.actor.features_extractor if self.share_features_extractor else None
        self.critic = self.make_critic(shared)
        # A shared features extractor is trained by the actor loss only (as in SB3).
        critic_parameters = [p for n, p in self.critic.named_parameters() if not n.startswith("features_extractor")]
        self.critic.optimizer = self.optimizer_class(critic_parameters, lr=lr, **self.optimizer_kwargs)
        # The target never shares anything: it must lag behind the online critic.
        self.critic_target = self.make_critic(None)
        self.critic_target.load_state_dict(self.critic.state_dict())
        self.critic_target.set_training_mode(False)
        self.critic_target.requires_grad_(False)

        if self.use_value_function:
            self.value_net = self.make_value_net()
            self.value_net.optimizer = self.optimizer_class(self.value_net.parameters(), lr=lr, **self.optimizer_kwargs)
            self.value_target = self.make_value_net()
            self.value_target.load_state_dict(self.value_net.state_dict())
            self.value_target.set_training_mode(False)
            self.value_target.requires_grad_(False)

    def make_critic(self, features_extractor: BaseFeaturesExtractor | None = None) -> EnsembleCritic:
        kwargs = self._update_features_extractor(self.critic_kwargs, features_extractor)
        kwargs.update(n_critics=self.n_critics, share_features_extractor=features_extractor is not None)
        return EnsembleCritic(**kwargs).to(self.device)

    def make_value_net(self) -> ValueNetwork:
        return ValueNetwork(**self._update_features_extractor(self.critic_kwargs)).to(self.device)

    def _get_constructor_parameters(self) -> dict[str, Any]:
        data = super()._get_constructor_parameters()
        data.update(
            dict(
                net_arch=self.net_arch,
                activation_fn=self.activation_fn,
                n_critics=self.n_critics,
                share_features_extractor=self.share_features_extractor,
                use_value_function=self.use_value_function,
                lr_schedule=self._dummy_schedule,  # not needed to rebuild the policy alone
                optimizer_class=self.optimizer_class,
                optimizer_kwargs=self.optimizer_kwargs,
                features_extractor_class=self.features_extractor_class,
                features_extractor_kwargs=self.features_extractor_kwargs,
            )
        )
        return data

    def forward(self, obs: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self._predict(obs, deterministic=deterministic)

    def _predict(self, observation: PyTorchObs, deterministic: bool = False) -> th.Tensor:
        return self.actor(observation, deterministic)

    def set_training_mode(self, mode: bool) -> None:
        """
        Put actor and critic in training or evaluation mode (matters for batch norm and dropout only).

        SB3 calls this before every action (eval) and every ``train()`` (train), so with one gradient step per env
        step the mode flips twice per step, and each flip walks the whole module tree. When every module is one
        whose forward ignores the mode (linear layers, activations, flatten, ...), the walk is skipped.
        """
        if self._inert:
            self.training = mode
            return
        self.actor.set_training_mode(mode)
        self.critic.set_training_mode(mode)
        if self.use_value_function:
            self.value_net.set_training_mode(mode)
        self.training = mode


# Modules whose forward pass does not depend on ``self.training`` (unlike BatchNorm or Dropout).
_MODE_INERT = (
    BasePolicy, BaseModel, BaseFeaturesExtractor, nn.Sequential, nn.ModuleList, nn.ModuleDict, nn.Linear,
    EnsembleLinear, nn.Flatten, nn.Identity, nn.ReLU, nn.Tanh, nn.ELU, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Mish,
    nn.Sigmoid, nn.Softplus, nn.Conv2d,
)  # fmt: skip


MlpPolicy = CustomSACPolicy


class MultiInputPolicy(CustomSACPolicy):
    """CustomSACPolicy for ``Dict`` observation spaces (SB3's ``CombinedExtractor`` by default)."""

    def __init__(self, *args, features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor, **kwargs):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)
