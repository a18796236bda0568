"""Moving weights between SB3's SAC and CustomSAC (same networks, different layout of the critics)."""

from collections.abc import Mapping

import torch as th
from stable_baselines3 import SAC

from custom_sac.sac import CustomSAC


def ensemble_state_from_sb3(critic_state: Mapping[str, th.Tensor], n_critics: int) -> dict[str, th.Tensor]:
    """
    Convert tensors keyed like SB3's ``ContinuousCritic`` (``qf{i}.{j}.weight`` of shape (out, in), ``qf{i}.{j}.bias``
    of shape (out,)) to the stacked layout of :class:`~custom_sac.critics.EnsembleCritic`
    (``q_net.{j}.weight`` of shape (n, in, out), ``q_net.{j}.bias`` of shape (n, 1, out)). Other keys (the
    features extractor's weights and buffers) are the same in both and pass through.

    Works for anything shaped like the parameters: weights, gradients, Adam's moment estimates.
    The layer indices ``j`` are the same in both (Linear, activation, Linear, ...).
    """
    layers = sorted({int(key.split(".")[1]) for key in critic_state if key.startswith("qf0.")})
    converted = {key: value for key, value in critic_state.items() if not key.startswith("qf")}
    for j in layers:
        converted[f"q_net.{j}.weight"] = th.stack([critic_state[f"qf{i}.{j}.weight"].T for i in range(n_critics)])
        converted[f"q_net.{j}.bias"] = th.stack([critic_state[f"qf{i}.{j}.bias"][None] for i in range(n_critics)])
    return converted


def load_sb3_sac_weights(model: CustomSAC, sb3_model: SAC) -> None:
    """
    Copy the networks (features extractors and their buffers included) and the entropy coefficient of a
    ``stable_baselines3.SAC`` into ``model``, built with the same spaces, ``net_arch``, ``n_critics``, activation,
    features extractor and gSDE settings. Optimizer states are not copied.

    :param model: destination CustomSAC
    :param sb3_model: source SB3 SAC
    """
    n_critics = model.critic.n_critics
    with th.no_grad():
        model.actor.load_state_dict(sb3_model.actor.state_dict())
        for ours, theirs in ((model.critic, sb3_model.critic), (model.critic_target, sb3_model.critic_target)):
            ours.load_state_dict(ensemble_state_from_sb3(theirs.state_dict(), n_critics))
        if model.log_ent_coef is not None and sb3_model.log_ent_coef is not None:
            model.log_ent_coef.copy_(sb3_model.log_ent_coef)
        elif model.log_ent_coef is None and sb3_model.log_ent_coef is None:
            model.ent_coef_tensor.copy_(sb3_model.ent_coef_tensor)
        else:
            raise ValueError("Both models must use the same ent_coef mode ('auto...' or a fixed float)")
