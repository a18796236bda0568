"""The policy of CustomSAC: actor, critics and their targets, built and wired as in SB3's ``SACPolicy``."""

from typing import Any

import torch as th
from gymnasium import spaces
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.torch_layers import (
    BaseFeaturesExtractor,
    CombinedExtractor,
    FlattenExtractor,
    NatureCNN,
    get_actor_critic_arch,
)
from stable_baselines3.common.type_aliases import PyTorchObs, Schedule
from torch import nn

from custom_sac.actor import Actor
from custom_sac.critics import EnsembleCritic, ValueNetwork

__all__ = ["Actor", "CnnPolicy", "CustomSACPolicy", "EnsembleCritic", "MlpPolicy", "MultiInputPolicy", "ValueNetwork"]


class CustomSACPolicy(BasePolicy):
    """
    Actor, critics and target critics of CustomSAC (and, optionally, a value network with its target).

    :param observation_space: Observation space
    :param action_space: Action space
    :param lr_schedule: Learning rate schedule used to build the optimizers (CustomSAC then sets each
        optimizer's own rate)
    :param net_arch: Hidden layers, a list shared by actor and critics or ``dict(pi=[...], qf=[...])``
    :param activation_fn: Activation function
    :param use_sde: Use gSDE (generalized state-dependent exploration, see :class:`~custom_sac.actor.Actor`)
    :param log_std_init: Initial value of gSDE's ``log_std``
    :param use_expln: gSDE: ``expln`` instead of ``exp`` to map ``log_std`` to a standard deviation
    :param clip_mean: gSDE: clip the Gaussian mean to [-clip_mean, clip_mean] (0: no clipping)
    :param features_extractor_class: Features extractor to use
    :param features_extractor_kwargs: Keyword arguments for the features extractor
    :param normalize_images: Whether to divide image observations by 255
    :param optimizer_class: The optimizer to use, ``th.optim.Adam`` by default
    :param optimizer_kwargs: Extra optimizer arguments. For Adam and AdamW, ``fused=True`` is added unless
        ``fused`` or ``foreach`` is given: one kernel per step instead of ~10 small ops per parameter tensor (the
        math is Adam's; results agree with the per-tensor loop to float rounding)
    :param n_critics: Number of critics
    :param share_features_extractor: Whether the critic reuses the actor's features extractor. Shared, it is
        trained by the actor loss only; not shared, the critic loss trains the critic's own copy. The target
        critic always has its own copy, moved by Polyak averaging.
    :param full_std: gSDE: one standard deviation per (latent feature, action) pair; ``False``: one per latent
        feature (SB3's ``SACPolicy`` does not take this argument and always uses ``True``)
    :param use_value_function: Also build V(s) and its target (SAC v1)
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
        use_sde: bool = False,
        log_std_init: float = -3,
        use_expln: bool = False,
        clip_mean: float = 2.0,
        features_extractor_class: type[BaseFeaturesExtractor] = FlattenExtractor,
        features_extractor_kwargs: dict[str, Any] | None = None,
        normalize_images: bool = True,
        optimizer_class: type[th.optim.Optimizer] = th.optim.Adam,
        optimizer_kwargs: dict[str, Any] | None = None,
        n_critics: int = 2,
        share_features_extractor: bool = False,
        full_std: bool = True,
        use_value_function: bool = False,
    ):
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
        sde_args = dict(use_sde=use_sde, log_std_init=log_std_init, full_std=full_std, use_expln=use_expln)
        self.actor_kwargs = {**net_args, **sde_args, "net_arch": actor_arch, "clip_mean": clip_mean}
        self.critic_kwargs = {**net_args, "net_arch": critic_arch}
        self._build(lr_schedule)

    def _build(self, lr_schedule: Schedule) -> None:
        lr = lr_schedule(1)
        self.actor = Actor(**self._update_features_extractor(self.actor_kwargs)).to(self.device)
        self.actor.optimizer = self.optimizer_class(self.actor.parameters(), lr=lr, **self.optimizer_kwargs)

        shared = self.actor.features_extractor if self.share_features_extractor else None
        self.critic = self.make_critic(shared)
        self.critic.optimizer = self.optimizer_class(self.critic.own_parameters(), lr=lr, **self.optimizer_kwargs)
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
                **{key: self.actor_kwargs[key] for key in ("use_sde", "log_std_init", "full_std", "use_expln")},
                clip_mean=self.actor_kwargs["clip_mean"],
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

    def reset_noise(self, batch_size: int = 1) -> None:
        """
        Draw new gSDE exploration matrices.

        :param batch_size: Number of envs acting with the policy
        """
        self.actor.reset_noise(batch_size=batch_size)

    def set_training_mode(self, mode: bool) -> None:
        """
        Put actor and critic (and V(s)) in training or evaluation mode (matters for batch norm and dropout only).
        """
        self.actor.set_training_mode(mode)
        self.critic.set_training_mode(mode)
        if self.use_value_function:
            self.value_net.set_training_mode(mode)
        self.training = mode


MlpPolicy = CustomSACPolicy


class CnnPolicy(CustomSACPolicy):
    """CustomSACPolicy for image observations (SB3's ``NatureCNN`` by default)."""

    def __init__(self, *args, features_extractor_class: type[BaseFeaturesExtractor] = NatureCNN, **kwargs):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)


class MultiInputPolicy(CustomSACPolicy):
    """CustomSACPolicy for ``Dict`` observation spaces (SB3's ``CombinedExtractor`` by default)."""

    def __init__(self, *args, features_extractor_class: type[BaseFeaturesExtractor] = CombinedExtractor, **kwargs):
        super().__init__(*args, features_extractor_class=features_extractor_class, **kwargs)
