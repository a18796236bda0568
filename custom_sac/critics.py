"""The critics of CustomSAC: ``n_critics`` Q-networks evaluated as one batched ensemble, and the optional V(s)."""

import itertools
import math

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BaseModel
from stable_baselines3.common.preprocessing import get_action_dim
from stable_baselines3.common.torch_layers import BaseFeaturesExtractor, create_mlp
from torch import nn


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
    :param share_features_extractor: Whether the features extractor is the actor's (then the critic loss neither
        trains it nor sends gradients into it)
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

    def own_parameters(self) -> list[nn.Parameter]:
        """The parameters the critic loss trains: all of them, except a features extractor shared with the actor."""
        if not self.share_features_extractor:
            return list(self.parameters())
        return [p for name, p in self.named_parameters() if not name.startswith("features_extractor.")]

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
