"""``CustomSAC(compile_step=True)``: the gradient step of ``CustomSAC._gradient_step``, compiled whole.

LeanRL's pattern: the fast variant is the plain code, compiled. ``torch.compile`` traces one gradient step (the
forward passes, the backward passes that ``torch.autograd.grad`` records, the optimizer steps and the Polyak
update) into one graph, and inductor turns it into a few fused loops around the matrix products. Nothing here
restates the math; this module only makes the step traceable without graph breaks:

- ``torch.autograd.grad`` is traced when dynamo's ``trace_autograd_ops`` is on; it is switched on around the
  compiled call only (``torch._dynamo.config.patch``), never for the rest of the process.
- ``Optimizer.step`` breaks the graph on purpose (it toggles grad mode), so while compiling, :func:`optimizer_step`
  calls the optimizer's own functional update (``torch.optim.adam.adam``, the function ``Adam.step`` runs) with
  the gradients and the moment estimates that ``Adam.step`` would pass it. Eager, it is ``optimizer.step()``.
- Learning rates are tensors (:func:`hold_learning_rates`) updated in place, so a schedule never recompiles.
"""

from collections.abc import Callable, Iterable
from typing import Any

import torch as th
from torch.optim.adam import adam

GradientStep = Callable[..., dict[str, th.Tensor]]


def optimizer_step(optimizer: th.optim.Optimizer, params: list[th.Tensor], grads: Iterable[th.Tensor | None]) -> None:
    """
    Take one step of ``optimizer`` along ``grads``, the gradients of its ``params`` (``None``: not in the loss,
    skipped as ``optimizer.step()`` skips a parameter without ``.grad``). Eager, the gradients are left in
    ``.grad``; compiled, ``.grad`` is not written.
    """
    if not th.compiler.is_compiling() or type(optimizer) not in (th.optim.Adam, th.optim.AdamW):
        for param, grad in zip(params, grads):
            if grad is not None and grad.stride() != param.stride():
                # the layout backward() would give it: CUDA's fused Adam refuses other strides, even of a size-1 axis
                grad = th.empty_like(param).copy_(grad)
            param.grad = grad
        optimizer.step()
        return
    with_grads = [(p, g) for p, g in zip(params, grads) if g is not None]
    states = [optimizer.state[p] for p, _ in with_grads]
    group = optimizer.param_groups[0]  # compile_step keeps one group per optimizer (see hold_learning_rates)
    with th.no_grad():
        adam(
            [p for p, _ in with_grads],
            [g for _, g in with_grads],
            [s["exp_avg"] for s in states],
            [s["exp_avg_sq"] for s in states],
            [s["max_exp_avg_sq"] for s in states] if group["amsgrad"] else [],
            [s["step"] for s in states],
            amsgrad=group["amsgrad"],
            beta1=group["betas"][0],
            beta2=group["betas"][1],
            lr=group["lr"],
            weight_decay=group["weight_decay"],
            eps=group["eps"],
            maximize=group["maximize"],
            # torch does not trace its fused kernel; the per-tensor update it traces, inductor fuses itself
            foreach=False,
            capturable=True,
            differentiable=False,
            fused=False,
            decoupled_weight_decay=group["decoupled_weight_decay"],
        )


def hold_learning_rates(optimizers: Iterable[th.optim.Optimizer]) -> None:
    """Make each optimizer's learning rate a tensor, so that :func:`set_learning_rate` changes it in place."""
    for optimizer in optimizers:
        if len(optimizer.param_groups) != 1:
            raise ValueError("compile_step needs one parameter group per optimizer")
        for group in optimizer.param_groups:
            if not isinstance(group["lr"], th.Tensor):
                group["lr"] = th.tensor(float(group["lr"]), device=group["params"][0].device)


def set_learning_rate(optimizer: th.optim.Optimizer, learning_rate: float) -> None:
    """SB3's ``update_learning_rate``, in place where the rate is a tensor (a compiled step reads it there)."""
    for group in optimizer.param_groups:
        if isinstance(group["lr"], th.Tensor):
            group["lr"].fill_(learning_rate)
        else:
            group["lr"] = learning_rate


def optimizers_started(optimizers: Iterable[th.optim.Optimizer]) -> bool:
    """Whether every optimizer holds its state (Adam creates its moment estimates at its first eager step)."""
    return all(len(optimizer.state) > 0 for optimizer in optimizers)


def compile_step(step: GradientStep, cudagraphs: bool = False) -> GradientStep:
    """
    ``step`` compiled by ``torch.compile``, with eager's random draws (``fallback_random``), so that it matches the
    eager step up to float rounding.

    :param step: the gradient step, ``CustomSAC._gradient_step``
    :param cudagraphs: On a GPU, also replay the compiled step as a CUDA graph (inductor's ``triton.cudagraphs``,
        what ``mode="reduce-overhead"`` sets): one launch instead of dozens
    """
    compiled = th.compile(step, options={"fallback_random": True, "triton.cudagraphs": cudagraphs})

    def compiled_step(*args: Any, **kwargs: Any) -> dict[str, th.Tensor]:
        with th._dynamo.config.patch(trace_autograd_ops=True):
            if cudagraphs:
                # A graph's outputs live in memory that its next replay overwrites: copy the losses train() keeps
                th.compiler.cudagraph_mark_step_begin()
                return {key: value.clone() for key, value in compiled(*args, **kwargs).items()}
            return compiled(*args, **kwargs)

    return compiled_step
