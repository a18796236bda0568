"""CustomSAC: Soft Actor-Critic written by hand on top of SB3's ``OffPolicyAlgorithm``."""

from collections import defaultdict
from typing import Any, ClassVar, Literal, TypeVar

import numpy as np
import torch as th
from gymnasium import spaces
from stable_baselines3.common.buffers import ReplayBuffer
from stable_baselines3.common.noise import ActionNoise
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.policies import BasePolicy
from stable_baselines3.common.preprocessing import is_image_space
from stable_baselines3.common.type_aliases import GymEnv, MaybeCallback, ReplayBufferSamples, Schedule
from stable_baselines3.common.utils import FloatSchedule, get_parameters_by_name
from torch.nn import functional as F

from custom_sac import compiled
from custom_sac.policies import Actor, CnnPolicy, CustomSACPolicy, EnsembleCritic, MlpPolicy, MultiInputPolicy

SelfCustomSAC = TypeVar("SelfCustomSAC", bound="CustomSAC")


class CustomSAC(OffPolicyAlgorithm):
    """
    Soft Actor-Critic (Haarnoja et al., 2018: arXiv:1801.01290 and arXiv:1812.05905).

    Maximises reward plus policy entropy, ``sum_t r_t + alpha * H(pi(.|s_t))``, with a squashed-Gaussian actor,
    ``n_critics`` Q-functions whose minimum forms the target, Polyak-averaged target critics, and a temperature
    ``alpha`` tuned so the policy's entropy stays near ``target_entropy``. The same update, in the same order,
    as ``stable_baselines3.SAC``, so that one step from the same weights and batch gives the same numbers.

    The math is in :meth:`_gradient_step`, one gradient step in the paper's order, and the loss methods it calls
    (``ent_coef_loss``, ``soft_q_target``, ``critic_loss``, ``actor_loss``). Autograd computes every gradient.

    Takes every argument of ``stable_baselines3.SAC``, plus:

    :param actor_learning_rate: Learning rate (float or schedule) of the actor; ``None`` means ``learning_rate``
    :param critic_learning_rate: Learning rate of the critics (and the value network); ``None`` means
        ``learning_rate``
    :param ent_coef_learning_rate: Learning rate of the entropy coefficient; ``None`` means ``learning_rate``
    :param use_value_function: Also learn a soft state value V(s) with its own Polyak target, as in the first SAC
        paper: the critics' target becomes ``r + gamma * V_target(s')`` and V regresses on
        ``min_i Q_i(s, a~) - alpha * log pi(a~|s)``. Off by default: the second paper showed V is redundant and
        the twin-Q target alone is as good and cheaper. It can help when the critics' bootstrapped target is
        noisy (large action spaces, where sampling ``a'`` adds variance), at the cost of one more network.
    :param compile_step: ``torch.compile`` :meth:`_gradient_step` whole (forward, backward, optimizer steps and
        Polyak update; see :mod:`custom_sac.compiled`): faster, equal to the eager step up to float rounding, after
        ~30 s of compiling at the second gradient step; ``"cudagraphs"``: also replay it as a CUDA graph (GPUs).

    See ``stable_baselines3.SAC`` for the others, which CustomSAC takes with the same names, defaults and meaning.
    """

    policy_aliases: ClassVar[dict[str, type[BasePolicy]]] = {
        "MlpPolicy": MlpPolicy,
        "CnnPolicy": CnnPolicy,
        "MultiInputPolicy": MultiInputPolicy,
    }
    policy: CustomSACPolicy
    actor: Actor
    critic: EnsembleCritic
    critic_target: EnsembleCritic

    def __init__(
        self,
        policy: str | type[CustomSACPolicy],
        env: GymEnv | str,
        learning_rate: float | Schedule = 3e-4,
        buffer_size: int = 1_000_000,
        learning_starts: int = 100,
        batch_size: int = 256,
        tau: float = 0.005,
        gamma: float = 0.99,
        train_freq: int | tuple[int, str] = 1,
        gradient_steps: int = 1,
        action_noise: ActionNoise | None = None,
        replay_buffer_class: type[ReplayBuffer] | None = None,
        replay_buffer_kwargs: dict[str, Any] | None = None,
        optimize_memory_usage: bool = False,
        n_steps: int = 1,
        ent_coef: str | float = "auto",
        target_update_interval: int = 1,
        target_entropy: str | float = "auto",
        use_sde: bool = False,
        sde_sample_freq: int = -1,
        use_sde_at_warmup: bool = False,
        actor_learning_rate: float | Schedule | None = None,
        critic_learning_rate: float | Schedule | None = None,
        ent_coef_learning_rate: float | Schedule | None = None,
        use_value_function: bool = False,
        compile_step: bool | Literal["cudagraphs"] = False,
        stats_window_size: int = 100,
        tensorboard_log: str | None = None,
        policy_kwargs: dict[str, Any] | None = None,
        verbose: int = 0,
        seed: int | None = None,
        device: th.device | str = "auto",
        _init_setup_model: bool = True,
    ):
        policy_kwargs = dict(policy_kwargs or {})
        if use_value_function:
            policy_kwargs["use_value_function"] = True
        super().__init__(
            policy,
            env,
            learning_rate,
            buffer_size,
            learning_starts,
            batch_size,
            tau,
            gamma,
            train_freq,
            gradient_steps,
            action_noise,
            replay_buffer_class=replay_buffer_class,
            replay_buffer_kwargs=replay_buffer_kwargs,
            optimize_memory_usage=optimize_memory_usage,
            n_steps=n_steps,
            policy_kwargs=policy_kwargs,
            stats_window_size=stats_window_size,
            tensorboard_log=tensorboard_log,
            verbose=verbose,
            device=device,
            seed=seed,
            use_sde=use_sde,
            sde_sample_freq=sde_sample_freq,
            use_sde_at_warmup=use_sde_at_warmup,
            supported_action_spaces=(spaces.Box,),
            support_multi_env=True,
        )
        self.ent_coef = ent_coef
        self.target_entropy = target_entropy
        self.target_update_interval = target_update_interval
        self.actor_learning_rate = actor_learning_rate
        self.critic_learning_rate = critic_learning_rate
        self.ent_coef_learning_rate = ent_coef_learning_rate
        self.use_value_function = use_value_function
        self.compile_step = compile_step
        self.log_ent_coef: th.Tensor | None = None
        self.ent_coef_optimizer: th.optim.Optimizer | None = None
        if _init_setup_model:
            self._setup_model()

    def _setup_model(self) -> None:
        super()._setup_model()
        self._create_aliases()

        if self.target_entropy == "auto":
            # -dim(A): the heuristic of the second SAC paper, about one nat less per action dimension than a
            # uniform distribution on [-1, 1] has
            self.target_entropy = -float(np.prod(self.action_space.shape))  # type: ignore[arg-type]
        else:
            self.target_entropy = float(self.target_entropy)

        if isinstance(self.ent_coef, str) and self.ent_coef.startswith("auto"):
            init_value = float(self.ent_coef.split("_")[1]) if "_" in self.ent_coef else 1.0
            if init_value <= 0.0:
                raise ValueError(f"The initial value of ent_coef must be > 0, got {self.ent_coef!r}")
            # alpha is optimised through its log: alpha = exp(log_alpha) stays positive with no constraint, and
            # the gradient step is relative (d loss / d log_alpha = alpha * d loss / d alpha), so alpha can move
            # across orders of magnitude at a fixed learning rate.
            self.log_ent_coef = th.log(th.ones(1, device=self.device) * init_value).requires_grad_(True)
            fused = self.policy.optimizer_kwargs.get("fused")
            self.ent_coef_optimizer = th.optim.Adam([self.log_ent_coef], lr=1.0, fused=fused)
        else:
            self.ent_coef_tensor = th.tensor(float(self.ent_coef), device=self.device)
        self._update_learning_rate(progress_remaining=1.0)

    def _create_aliases(self) -> None:
        self.actor = self.policy.actor
        self.critic = self.policy.critic
        self.critic_target = self.policy.critic_target
        online, target = self.critic, self.critic_target
        if self.use_value_function:
            self.value_net = online = self.policy.value_net
            self.value_target = target = self.policy.value_target
        self._polyak_pairs = (list(target.parameters()), list(online.parameters()))
        # Batch-norm running statistics are copied into the target at each target update (SB3's rule, GH #996)
        self._buffer_pairs = tuple(get_parameters_by_name(net, ["running_"]) for net in (target, online))
        self._compiled_step = None
        if self.compile_step:
            self._compiled_step = compiled.compile_step(self._gradient_step, self.compile_step == "cudagraphs")
        # Acting from plain vector observations can skip predict()'s checks and conversions (see _sample_action)
        self._vector_obs = isinstance(self.observation_space, spaces.Box) and not is_image_space(self.observation_space)

    def _optimizer_rates(self) -> list[tuple[th.optim.Optimizer, float | Schedule | None]]:
        """Every optimizer with its own learning rate (``None``: ``learning_rate``)."""
        rates = [(self.actor.optimizer, self.actor_learning_rate), (self.critic.optimizer, self.critic_learning_rate)]
        if self.ent_coef_optimizer is not None:
            rates.append((self.ent_coef_optimizer, self.ent_coef_learning_rate))
        if self.use_value_function:
            rates.append((self.value_net.optimizer, self.critic_learning_rate))
        return rates

    def _update_learning_rate(
        self,
        optimizers: list[th.optim.Optimizer] | th.optim.Optimizer | None = None,
        progress_remaining: float | None = None,
    ) -> None:
        """
        Set every optimizer's rate from its own schedule (``optimizers`` is ignored: the pairing is fixed).

        :param progress_remaining: where to read the schedules (default: the current progress, which is logged)
        """
        progress = self._current_progress_remaining if progress_remaining is None else progress_remaining
        if progress_remaining is None:
            self.logger.record("train/learning_rate", self.lr_schedule(progress))
        rates = self._optimizer_rates()
        if self.compile_step:
            compiled.hold_learning_rates(optimizer for optimizer, _ in rates)  # a schedule never recompiles
        for optimizer, rate in rates:
            # lr_schedule is looked up here, not at setup: reassigning it moves every optimizer without its own rate
            compiled.set_learning_rate(optimizer, (self.lr_schedule if rate is None else FloatSchedule(rate))(progress))

    def train(self, gradient_steps: int, batch_size: int = 64) -> None:
        self.policy.set_training_mode(True)
        self._update_learning_rate()
        step = self._gradient_step
        if self._compiled_step is not None and compiled.optimizers_started(o for o, _ in self._optimizer_rates()):
            step = self._compiled_step  # from the second step on: Adam creates its moments at its first, eagerly

        # Losses stay on the device until the end: one host sync per key per train() call, not per step.
        losses: dict[str, list[th.Tensor]] = defaultdict(list)
        for gradient_step in range(gradient_steps):
            data = self.replay_buffer.sample(batch_size, env=self._vec_normalize_env)  # type: ignore[union-attr]
            if self.use_sde:
                # log_std may have changed since the last step: draw the exploration matrix from the current one
                self.actor.reset_noise()
            update_target = gradient_step % self.target_update_interval == 0
            for key, value in step(data, update_target).items():
                losses[key].append(value)

        self._n_updates += gradient_steps
        self.logger.record("train/n_updates", self._n_updates, exclude="tensorboard")
        for key, values in losses.items():
            self.logger.record(f"train/{key}", _mean(values))

    def _gradient_step(self, data: ReplayBufferSamples, update_target: bool = True) -> dict[str, th.Tensor]:
        """
        One gradient step of SAC on a batch, in the paper's order: temperature, target, critics, actor, targets.

        :param data: the batch (s, a, r, s', done)
        :param update_target: also move the target networks towards the online ones (Polyak averaging)
        :return: the losses and the entropy coefficient of this step, as tensors
        """
        losses: dict[str, th.Tensor] = {}
        # a~ ~ pi(.|s), reparameterised: the actor loss differentiates through it
        actions_pi, log_prob = self.actor.action_log_prob(data.observations)
        log_prob = log_prob.reshape(-1, 1)

        # 1. Temperature. This step's alpha is the one before the update, as in SB3.
        if self.ent_coef_optimizer is None:
            ent_coef = self.ent_coef_tensor
        else:
            ent_coef = th.exp(self.log_ent_coef.detach())  # type: ignore[union-attr]
            ent_coef_loss = self.ent_coef_loss(log_prob)
            losses["ent_coef_loss"] = ent_coef_loss.detach()
            self._descend(self.ent_coef_optimizer, ent_coef_loss)
        losses["ent_coef"] = ent_coef

        # 2. Target, a constant for the critics
        with th.no_grad():
            if self.use_value_function:
                discounts = data.discounts if data.discounts is not None else self.gamma
                target_q = data.rewards + (1 - data.dones) * discounts * self.value_target(data.next_observations)
            else:
                next_actions, next_log_prob = self.actor.action_log_prob(data.next_observations)
                next_q = self.critic_target(data.next_observations, next_actions)
                target_q = self.soft_q_target(data, next_q, next_log_prob.reshape(-1, 1), ent_coef)

        # 3. Critics
        critic_loss = self.critic_loss(self.critic(data.observations, data.actions), target_q)
        losses["critic_loss"] = critic_loss.detach()
        self._descend(self.critic.optimizer, critic_loss)

        # 4. Actor, through the critics just updated (as in SB3); _descend differentiates the actor's weights only
        q_pi = self.critic(data.observations, actions_pi)
        actor_loss = self.actor_loss(ent_coef, log_prob, q_pi)
        losses["actor_loss"] = actor_loss.detach()
        if self.use_value_function:
            # V(s) regresses on the soft value of the current policy, min_i Q_i(s, a~) - alpha * log pi
            value_target = (q_pi.min(dim=0).values - ent_coef * log_prob).detach()
            value_loss = 0.5 * F.mse_loss(self.value_net(data.observations), value_target)
            losses["value_loss"] = value_loss.detach()
            self._descend(self.value_net.optimizer, value_loss)
        self._descend(self.actor.optimizer, actor_loss)

        # 5. Polyak averaging of the targets, target <- target + tau * (online - target), in one call
        if update_target:
            with th.no_grad():
                th._foreach_lerp_(*self._polyak_pairs, self.tau)
                if self._buffer_pairs[0]:
                    th._foreach_copy_(*self._buffer_pairs)
        return losses

    def _descend(self, optimizer: th.optim.Optimizer, loss: th.Tensor) -> None:
        """
        One step of ``optimizer`` down ``loss``, differentiated w.r.t. this optimizer's parameters only: the
        networks that the loss merely passes through (the critics, for the actor loss) get no gradient at all.
        """
        params = [param for group in optimizer.param_groups for param in group["params"]]
        grads = th.autograd.grad(loss, params, allow_unused=True)
        compiled.optimizer_step(optimizer, params, grads)

    def ent_coef_loss(self, log_prob: th.Tensor) -> th.Tensor:
        """
        Temperature: ``J(log_alpha) = -log_alpha * mean(log pi + target_entropy)`` raises alpha when the entropy
        ``-log pi`` falls below the target and lowers it otherwise. ``log pi`` is a constant here: this loss moves
        alpha, never the actor.
        """
        assert self.log_ent_coef is not None
        return -(self.log_ent_coef * (log_prob.detach() + self.target_entropy)).mean()

    def soft_q_target(self, data: ReplayBufferSamples, next_q: th.Tensor, next_log_prob: th.Tensor, ent_coef):
        """
        Soft Bellman target, ``y = r + gamma * (1 - done) * (min_i Q'_i(s', a') - alpha * log pi(a'|s'))``.

        :param next_q: target critics' Q-values at ``(s', a' ~ pi(.|s'))``, shape (n_critics, batch, 1)
        :param next_log_prob: ``log pi(a'|s')``, shape (batch, 1)
        """
        discounts = data.discounts if data.discounts is not None else self.gamma
        next_v = next_q.min(dim=0).values - ent_coef * next_log_prob
        return data.rewards + (1 - data.dones) * discounts * next_v

    def critic_loss(self, current_q: th.Tensor, target_q: th.Tensor) -> th.Tensor:
        """Critic regression on the target: ``0.5 * sum_i mean((Q_i(s, a) - y)^2)``."""
        return 0.5 * (current_q - target_q).pow(2).mean(dim=(1, 2)).sum()

    def actor_loss(self, ent_coef: th.Tensor, log_prob: th.Tensor, q_pi: th.Tensor) -> th.Tensor:
        """
        Actor: ``mean(alpha * log pi(a~|s) - min_i Q_i(s, a~))``, with ``a~ ~ pi(.|s)`` reparameterised.

        :param q_pi: Q-values of every critic at ``(s, a~)``, shape (n_critics, batch, 1)
        """
        return (ent_coef * log_prob - q_pi.min(dim=0).values).mean()

    def _sample_action(
        self, learning_starts: int, action_noise: ActionNoise | None = None, n_envs: int = 1
    ) -> tuple[np.ndarray, np.ndarray]:
        """
        SB3's exploration action, without ``predict()``'s round trip: ``predict`` rescales the actor's tanh output
        to the env's bounds and SB3 then scales it back to [-1, 1] for the replay buffer; the tanh output already
        is that scaled action.
        """
        if self.num_timesteps < learning_starts or not self._vector_obs or not isinstance(self._last_obs, np.ndarray):
            return super()._sample_action(learning_starts, action_noise, n_envs)
        self.policy.set_training_mode(False)
        with th.no_grad():
            actions = self.actor(th.as_tensor(self._last_obs, device=self.device))
        scaled_action = actions.cpu().numpy().reshape((-1, *self.action_space.shape))  # type: ignore[misc]
        if action_noise is not None:
            scaled_action = np.clip(scaled_action + action_noise(), -1, 1)
        return self.policy.unscale_action(scaled_action), scaled_action

    def learn(
        self: SelfCustomSAC,
        total_timesteps: int,
        callback: MaybeCallback = None,
        log_interval: int = 4,
        tb_log_name: str = "CustomSAC",
        reset_num_timesteps: bool = True,
        progress_bar: bool = False,
    ) -> SelfCustomSAC:
        return super().learn(
            total_timesteps=total_timesteps,
            callback=callback,
            log_interval=log_interval,
            tb_log_name=tb_log_name,
            reset_num_timesteps=reset_num_timesteps,
            progress_bar=progress_bar,
        )

    def _excluded_save_params(self) -> list[str]:
        aliases = ["actor", "critic", "critic_target", "value_net", "value_target", "_compiled_step"]
        return [*super()._excluded_save_params(), *aliases, "_polyak_pairs", "_buffer_pairs"]  # see _create_aliases

    def _get_torch_save_params(self) -> tuple[list[str], list[str]]:
        state_dicts = ["policy", "actor.optimizer", "critic.optimizer"]
        if self.use_value_function:
            state_dicts.append("value_net.optimizer")
        if self.ent_coef_optimizer is not None:
            state_dicts.append("ent_coef_optimizer")
            return state_dicts, ["log_ent_coef"]
        return state_dicts, ["ent_coef_tensor"]


def _mean(values: list[th.Tensor]) -> float:
    """Mean of per-step scalars as a float (one host sync; no stack for the common single gradient step)."""
    return values[0].item() if len(values) == 1 else th.stack(values).mean().item()
