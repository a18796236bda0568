"""The forward and backward passes of CustomSAC's networks, written out instead of recorded by autograd.

Autograd records every operation of a forward pass and replays the graph backwards. For SAC's small networks on a
CPU that bookkeeping (graph nodes, saved tensors, gradient accumulation, hooks) costs about a tenth of a gradient
step, so where the networks are plain ReLU MLPs on parameter-free features (vector or ``Dict`` observations, the
common case) CustomSAC computes the gradients itself (``manual_backward=True``, the default). They are the
textbook ones: for a layer ``z = x W^T + b`` followed by ``h = relu(z)``, with ``g_h`` the gradient of the loss
w.r.t. ``h``,

    g_z = g_h * [h > 0],    dL/dW = g_z^T x,    dL/db = sum of g_z over the batch,    dL/dx = g_z W

The math stays in one place, ``CustomSAC._gradient_step`` and its loss methods: :func:`manual_gradient_step` takes
the loss values from those methods and writes out only their gradients. So that an edited loss is never silently
ignored, :func:`checked_manual_step` runs both steps on the first gradient step of each ``learn()`` and CustomSAC
keeps to autograd if they disagree. tests/test_backprop.py checks that both steps give the same gradients and
tests/test_parity.py that both give SB3's numbers.
"""

import copy
import warnings
from collections.abc import Callable
from functools import partial
from typing import NamedTuple

import torch as th
from stable_baselines3.common.off_policy_algorithm import OffPolicyAlgorithm
from stable_baselines3.common.type_aliases import ReplayBufferSamples
from torch import nn
from torch.nn import functional as F

from custom_sac.actor import Actor
from custom_sac.critics import EnsembleCritic, EnsembleLinear, ensemble_linear
from custom_sac.distributions import LOG_STD_MAX, LOG_STD_MIN, squashed_gaussian, squashed_gaussian_backward
from custom_sac.policies import CustomSACPolicy

# The steps below take a CustomSAC (custom_sac.sac imports this module, so it is named by its SB3 base class here)
CustomSAC = OffPolicyAlgorithm


def supports_manual_backward(policy: CustomSACPolicy) -> bool:
    """
    Whether the written-out passes apply: ReLU MLPs on features extractors without parameters, no module whose
    forward depends on the training mode (batch norm, dropout), no gSDE, no V(s).
    """
    if policy.use_value_function or policy.activation_fn is not nn.ReLU or policy.actor.use_sde:
        return False
    if not policy._inert:
        return False
    if type(policy.actor) is not Actor or type(policy.critic) is not EnsembleCritic:
        return False  # a subclass may compute something else in its forward pass
    extractors = (policy.actor.features_extractor, policy.critic.features_extractor)
    if any(True for extractor in extractors for _ in extractor.parameters()):
        return False  # a CNN, say: autograd trains it
    if type(extractors[0]) is not type(extractors[1]):
        return False  # the step computes the features once for actor and critics
    return _is_relu_mlp(policy.actor.latent_pi, nn.Linear, ends_with_linear=False) and _is_relu_mlp(
        policy.critic.q_net, EnsembleLinear, ends_with_linear=True
    )


def _is_relu_mlp(mlp: nn.Sequential, linear: type[nn.Module], ends_with_linear: bool) -> bool:
    kinds = [isinstance(m, linear) for m in mlp]  # True for a linear layer, False for anything else
    expected = [k % 2 == 0 for k in range(len(kinds))]
    relus_are_relus = all(isinstance(m, nn.ReLU) for m, is_linear in zip(mlp, kinds) if not is_linear)
    return kinds == expected and relus_are_relus and len(kinds) % 2 == int(ends_with_linear)


def linear_layers(mlp: nn.Sequential) -> list[nn.Module]:
    """The linear layers of a ReLU MLP, in order."""
    return [m for m in mlp if not isinstance(m, nn.ReLU)]


def relu_backward_(grad: th.Tensor, output: th.Tensor) -> th.Tensor:
    """``g_z = g_h * [h > 0]`` for ``h = relu(z)``, in place in ``grad`` (autograd's own kernel for ReLU)."""
    return th.ops.aten.threshold_backward.grad_input(grad, output, 0.0, grad_input=grad)


class ActorPass(NamedTuple):
    """What the actor's backward pass needs from its forward pass."""

    actions: th.Tensor  # tanh(u), shape (batch, action_dim)
    log_prob: th.Tensor  # log pi(a|s), shape (batch,)
    hidden: list[th.Tensor]  # the input of every hidden layer, then the last hidden layer's output
    log_std: th.Tensor  # before clamping
    noise: th.Tensor
    std: th.Tensor


def actor_forward(actor: Actor, layers: list[nn.Module], features: th.Tensor) -> ActorPass:
    """
    ``Actor.action_log_prob`` (same operations, same random draws), keeping what the backward pass needs.

    :param features: the features extractor's output for the observations
    """
    x = features
    hidden = [x]
    for layer in layers:
        x = F.linear(x, layer.weight, layer.bias).relu_()
        hidden.append(x)
    mean = F.linear(x, actor.mu.weight, actor.mu.bias)
    log_std = F.linear(x, actor.log_std.weight, actor.log_std.bias)
    noise = th.empty_like(mean).normal_()
    actions, log_prob, std = squashed_gaussian(mean, th.clamp(log_std, LOG_STD_MIN, LOG_STD_MAX), noise)
    return ActorPass(actions, log_prob, hidden, log_std, noise, std)


def actor_backward(
    actor: Actor, layers: list[nn.Module], forward: ActorPass, grad_actions: th.Tensor, grad_log_prob: th.Tensor
) -> None:
    """
    Set ``.grad`` of every actor parameter from the loss's gradients w.r.t. the sampled actions and log-probs.

    :param grad_actions: shape (batch, action_dim)
    :param grad_log_prob: shape (batch,)
    """
    grad_mean, grad_log_std = squashed_gaussian_backward(
        grad_actions, grad_log_prob, forward.actions, forward.noise, forward.std
    )
    # clamp() passes the gradient where the raw value lies within the bounds and stops it elsewhere
    grad_log_std = grad_log_std * ((forward.log_std >= LOG_STD_MIN) & (forward.log_std <= LOG_STD_MAX))
    last_hidden = forward.hidden[-1]
    for head, grad in ((actor.mu, grad_mean), (actor.log_std, grad_log_std)):
        head.weight.grad = grad.T @ last_hidden
        head.bias.grad = grad.sum(dim=0)
    # both heads read the last hidden layer, so its gradient is the sum of theirs
    grad = th.addmm(grad_mean @ actor.mu.weight, grad_log_std, actor.log_std.weight)
    for k in reversed(range(len(layers))):
        grad = relu_backward_(grad, forward.hidden[k + 1])
        layers[k].weight.grad = grad.T @ forward.hidden[k]
        layers[k].bias.grad = grad.sum(dim=0)
        if k > 0:
            grad = grad @ layers[k].weight


def critic_forward(
    layers: list[nn.Module], features: th.Tensor, actions: th.Tensor
) -> tuple[th.Tensor, list[th.Tensor]]:
    """
    ``EnsembleCritic.forward``, keeping the input of every layer for the backward pass.

    :param layers: the critics' linear layers (``EnsembleLinear``)
    :param features: the features extractor's output for the observations
    :return: Q-values of every critic, shape (n_critics, batch, 1), and the layers' inputs
    """
    x = th.cat([features, actions], dim=1)
    x = x.expand(layers[0].weight.shape[0], *x.shape)
    inputs = [x]
    for layer in layers[:-1]:
        x = ensemble_linear(x, layer.weight, layer.bias).relu_()
        inputs.append(x)
    return ensemble_linear(x, layers[-1].weight, layers[-1].bias), inputs


def _input_grad(grad: th.Tensor, weight: th.Tensor) -> th.Tensor:
    """``g_z W`` for ensemble weights stored as (n, in, out); the one-output head as a broadcast product."""
    return grad * weight.transpose(-2, -1) if weight.shape[-1] == 1 else grad @ weight.transpose(-2, -1)


def critic_backward(layers: list[nn.Module], inputs: list[th.Tensor], grad_q: th.Tensor) -> None:
    """
    Set ``.grad`` of every critic weight and bias from the loss's gradient w.r.t. the Q-values.

    :param grad_q: shape (n_critics, batch, 1)
    """
    grad = grad_q
    for k in reversed(range(len(layers))):
        weight, x = layers[k].weight, inputs[k]
        if weight.shape[-1] == 1:  # g^T x as a (1, batch) x (batch, in) product: a one-column bmm is slow on CPU
            # view_as, not a transpose: the same numbers with the weight's strides, which CUDA's fused Adam demands
            weight.grad = th.bmm(grad.transpose(1, 2), x).view_as(weight)
        else:
            weight.grad = th.bmm(x.transpose(1, 2), grad)
        layers[k].bias.grad = grad.sum(dim=1, keepdim=True)
        if k > 0:
            grad = relu_backward_(_input_grad(grad, weight), x)


def min_q_backward(
    layers: list[nn.Module],
    inputs: list[th.Tensor],
    argmin: th.Tensor,
    grad_min_q: th.Tensor,
    action_dim: int,
    split_by_critic: bool | None = None,
) -> th.Tensor:
    """
    Gradient w.r.t. the actions of a loss on ``min_i Q_i(s, a)``, the critics' weights held fixed.

    Each sample's gradient flows through the one critic that attains its minimum. On a CPU each critic
    back-propagates its own samples only (half the work with two critics); elsewhere one dense pass with zeros for
    the other critics avoids the host synchronisation that splitting the batch needs.

    :param argmin: which critic is the minimum, shape (batch, 1)
    :param grad_min_q: gradient w.r.t. the minimum, shape (batch, 1)
    :param action_dim: the actions are the last ``action_dim`` inputs of the first layer
    :param split_by_critic: ``None`` splits on CPU only
    :return: gradient w.r.t. the actions, shape (batch, action_dim)
    """
    if not (argmin.device.type == "cpu" if split_by_critic is None else split_by_critic):
        grad = th.zeros_like(inputs[-1][..., :1]).scatter_(0, argmin.unsqueeze(0), grad_min_q.unsqueeze(0))
        for k in reversed(range(1, len(layers))):
            grad = relu_backward_(_input_grad(grad, layers[k].weight), inputs[k])
        return _input_grad(grad, layers[0].weight[:, -action_dim:]).sum(dim=0)

    grad_actions = grad_min_q.new_empty(grad_min_q.shape[0], action_dim)
    argmin = argmin.view(-1)
    for i in range(inputs[0].shape[0]):
        rows = (argmin == i).nonzero().view(-1)
        grad = grad_min_q.index_select(0, rows)
        for k in reversed(range(1, len(layers))):
            grad = relu_backward_(_input_grad(grad, layers[k].weight[i]), inputs[k][i].index_select(0, rows))
        grad_actions.index_copy_(0, rows, _input_grad(grad, layers[0].weight[i, -action_dim:]))
    return grad_actions


def written_out_step(model: CustomSAC, data: ReplayBufferSamples) -> dict[str, th.Tensor]:
    """
    :func:`manual_gradient_step` once it has passed :func:`checked_manual_step` (the first step of each
    ``learn()``); after a failed check, warn once and take ``model._gradient_step`` from then on.
    """
    if not model._manual_backward:
        return model._gradient_step(data)
    if model._fast_path_checked:
        return (model._compiled_step or manual_gradient_step)(model, data)
    losses, agrees = checked_manual_step(model, data)
    model._fast_path_checked = True
    if not agrees:
        model._manual_backward = False
        warnings.warn(
            f"{type(model).__name__}: the written-out gradient step (custom_sac/backprop.py) disagrees with "
            "_gradient_step, whose losses have changed: autograd computes every step from now on",
            stacklevel=2,
        )
    return losses


@th.no_grad()
def manual_gradient_step(
    model: CustomSAC, data: ReplayBufferSamples, split_by_critic: bool | None = None
) -> dict[str, th.Tensor]:
    """
    ``CustomSAC._gradient_step`` with the gradients written out: the same forward passes and random draws in the
    same order, the loss values from the model's loss methods, ``.grad`` set by hand, no autograd graph.

    :param split_by_critic: see :func:`min_q_backward`
    """
    losses: dict[str, th.Tensor] = {}
    batch_size = data.rewards.shape[0]
    actor = model.actor
    # The features extractors have no parameters here (typically a flatten): one pass serves actor and critics
    obs = actor.extract_features(data.observations, actor.features_extractor)
    next_obs = actor.extract_features(data.next_observations, actor.features_extractor)

    pi = actor_forward(actor, model._actor_layers, obs)
    log_prob = pi.log_prob.reshape(-1, 1)
    ent_coef = _temperature_step(model, log_prob, losses)

    next_pi = actor_forward(actor, model._actor_layers, next_obs)
    next_q, _ = critic_forward(model._target_layers, next_obs, next_pi.actions)
    target_q = model.soft_q_target(data, next_q, next_pi.log_prob.reshape(-1, 1), ent_coef)

    # Critic loss 0.5 * sum_i mean_b (Q_i(s_b, a_b) - y_b)^2: d loss / d Q_i(s_b, a_b) = (Q_i(s_b, a_b) - y_b) / batch
    current_q, inputs = critic_forward(model._critic_layers, obs, data.actions)
    losses["critic_loss"] = model.critic_loss(current_q, target_q)
    critic_backward(model._critic_layers, inputs, (current_q - target_q) / batch_size)
    optimizer_step(model.critic.optimizer)

    # Actor loss mean_b(alpha * log pi - min_i Q_i): d / d min_i Q_i = -1 / batch and d / d log pi = alpha / batch
    q_pi, inputs = critic_forward(model._critic_layers, obs, pi.actions)
    losses["actor_loss"] = model.actor_loss(ent_coef, log_prob, q_pi)
    min_q_pi, argmin = q_pi.min(dim=0)
    grad_actions = min_q_backward(
        model._critic_layers, inputs, argmin, th.full_like(min_q_pi, -1.0 / batch_size), pi.actions.shape[1],
        split_by_critic,
    )  # fmt: skip
    actor_backward(actor, model._actor_layers, pi, grad_actions, (ent_coef / batch_size).expand(batch_size))
    optimizer_step(actor.optimizer)
    return losses


@th.compiler.disable
def optimizer_step(optimizer: th.optim.Optimizer) -> None:
    """
    ``optimizer.step()``, never compiled: traced, each new learning rate (a schedule) would be a new constant and
    recompile the step; eager, a fused Adam is one kernel anyway.
    """
    optimizer.step()


def compiled_step(cudagraphs: bool = False) -> Callable[[CustomSAC, ReplayBufferSamples], dict[str, th.Tensor]]:
    """
    :func:`manual_gradient_step` compiled by ``torch.compile`` (``CustomSAC(compile_step=True)``): inductor fuses
    the element-wise work between the products (ReLU masks, the squashed Gaussian, the losses) into a few loops.
    The same math and the same random draws (``fallback_random``: eager's generator, not inductor's), so it
    matches the eager step up to float rounding; the min-Q backward pass runs dense (``nonzero`` would split the
    graph). It compiles at its first call, the second gradient step of the first ``learn()``.

    :param cudagraphs: On a GPU, also replay each compiled piece as a CUDA graph (inductor's ``triton.cudagraphs``,
        what ``mode="reduce-overhead"`` sets): one launch instead of dozens (``CustomSAC(compile_step="cudagraphs")``).
    """
    step = partial(manual_gradient_step, split_by_critic=False)
    compiled = th.compile(step, options={"fallback_random": True, "triton.cudagraphs": cudagraphs})
    if not cudagraphs:
        return compiled  # type: ignore[return-value]

    def replayed_step(model: CustomSAC, data: ReplayBufferSamples) -> dict[str, th.Tensor]:
        # A graph's outputs live in memory that its next replay overwrites: copy the losses train() keeps
        th.compiler.cudagraph_mark_step_begin()
        return {key: value.clone() for key, value in compiled(model, data).items()}

    return replayed_step


def _temperature_step(model: CustomSAC, log_prob: th.Tensor, losses: dict[str, th.Tensor]) -> th.Tensor:
    """
    The step on ``ent_coef_loss``, whose gradient is known in closed form: ``log pi`` is a constant there, so
    ``dJ / dlog_alpha = -mean(log pi + target_entropy)``.

    :return: the coefficient alpha of this gradient step (taken before the update, as in SB3)
    """
    if model.ent_coef_optimizer is None or model.log_ent_coef is None:
        losses["ent_coef"] = model.ent_coef_tensor
        return model.ent_coef_tensor
    ent_coef = th.exp(model.log_ent_coef)
    entropy_gap = (log_prob + model.target_entropy).mean()
    losses["ent_coef"] = ent_coef
    losses["ent_coef_loss"] = -model.log_ent_coef[0] * entropy_gap
    model.log_ent_coef.grad = -entropy_gap.reshape(1)
    optimizer_step(model.ent_coef_optimizer)
    return ent_coef


def checked_manual_step(model: CustomSAC, data: ReplayBufferSamples) -> tuple[dict[str, th.Tensor], bool]:
    """
    :func:`manual_gradient_step` checked against ``model._gradient_step``, both from the same state, batch and
    noise. Where they agree, the written-out step's result is the one kept (weights, optimizer states, random
    generator), so a run's numbers do not depend on where its ``learn()`` calls began (a resumed run equals an
    uninterrupted one); where they disagree, the autograd step's.

    :return: the kept step's losses, and whether both steps agree: the same losses and gradients up to float
        rounding (loose enough for Adam's first step, which turns a rounding difference in a near-zero critic
        gradient into a weight difference of up to twice the learning rate; far tighter than a changed loss)
    """
    state, optimizers = _state_tensors(model), _optimizers(model)
    saved = [t.detach().clone() for t in state], [copy.deepcopy(o.state_dict()) for o in optimizers]
    rng = _rng_state(model.device)

    def restore() -> None:
        with th.no_grad():
            th._foreach_copy_(state, saved[0])
        for optimizer, optimizer_state in zip(optimizers, saved[1]):
            optimizer.load_state_dict(optimizer_state)
        _set_rng_state(model.device, rng)

    losses = model._gradient_step(data)
    reference_grads = _gradients(model)
    restore()
    fast_losses = manual_gradient_step(model, data)
    agrees = fast_losses.keys() == losses.keys() and all(_close(fast_losses[key], losses[key], 1e-3) for key in losses)
    agrees = agrees and all(
        (a is None and b is None) or (a is not None and b is not None and _close(a, b, 1e-2))
        for a, b in zip(_gradients(model), reference_grads)
    )
    if agrees:
        return fast_losses, True
    restore()
    return model._gradient_step(data), False


def _state_tensors(model: CustomSAC) -> list[th.Tensor]:
    tensors = list(model.policy.state_dict(keep_vars=True).values())
    return tensors if model.log_ent_coef is None else [*tensors, model.log_ent_coef]


def _optimizers(model: CustomSAC) -> list[th.optim.Optimizer]:
    optimizers = [model.actor.optimizer, model.critic.optimizer]
    return optimizers if model.ent_coef_optimizer is None else [*optimizers, model.ent_coef_optimizer]


def _gradients(model: CustomSAC) -> list[th.Tensor | None]:
    params = [*model.actor.parameters(), *model.critic.own_parameters()]
    if model.log_ent_coef is not None:
        params.append(model.log_ent_coef)
    return [None if p.grad is None else p.grad.clone() for p in params]


def _close(got: th.Tensor, expected: th.Tensor, rtol: float) -> bool:
    """``got`` within ``rtol`` of the largest entry of ``expected`` (plus a tiny absolute floor)."""
    return bool((got - expected).abs().max() <= rtol * expected.abs().max() + 1e-6)


def _rng_state(device: th.device) -> tuple[th.Tensor, th.Tensor | None]:
    return th.get_rng_state(), th.cuda.get_rng_state(device) if device.type == "cuda" else None


def _set_rng_state(device: th.device, state: tuple[th.Tensor, th.Tensor | None]) -> None:
    th.set_rng_state(state[0])
    if state[1] is not None:
        th.cuda.set_rng_state(state[1], device)
