"""The gradient step of CustomSAC, eager and compiled: what each loss differentiates, and compile_step's numbers."""

import numpy as np
import pytest
import torch as th
from stable_baselines3.common.logger import configure

from custom_sac import CustomSAC
from custom_sac.compiled import optimizer_step


def make_model(**kwargs) -> CustomSAC:
    """A small CustomSAC on Pendulum-v1 with a filled replay buffer (random transitions)."""
    kwargs = dict(learning_rate=1e-3, batch_size=64, learning_starts=0, policy_kwargs=dict(net_arch=[32, 32])) | kwargs
    model = CustomSAC("MlpPolicy", "Pendulum-v1", seed=0, **kwargs)
    rng = np.random.default_rng(0)
    for _ in range(300):
        obs = rng.uniform(-2, 2, (1, 3))
        model.replay_buffer.add(
            obs, obs + 0.1, rng.uniform(-1, 1, (1, 1)), rng.normal(size=1), rng.random(1) < 0.1, [{}]
        )
    model.set_logger(configure(None, []))
    return model


def train_both(models: tuple[CustomSAC, ...], seed: int, gradient_steps: int) -> None:
    """The same replay batches and the same noise for every model."""
    for model in models:
        np.random.seed(seed)
        th.manual_seed(seed)
        model.train(gradient_steps=gradient_steps, batch_size=model.batch_size)


def test_the_actor_loss_computes_no_gradient_for_the_critics():
    """The critics are a path to a~ in the actor loss: their weights' gradients come from the critic loss alone."""
    model = make_model()
    calls = {name: 0 for name, _ in model.critic.named_parameters()}
    for name, param in model.critic.named_parameters():
        param.register_hook(lambda grad, n=name: calls.__setitem__(n, calls[n] + 1))
    model.train(gradient_steps=3, batch_size=model.batch_size)
    assert calls == {name: 3 for name in calls}  # once per step: the critic loss's


def test_a_parameter_outside_the_loss_is_left_as_optimizer_step_leaves_it():
    """``optimizer_step`` with a ``None`` gradient skips that parameter, as ``optimizer.step()`` does without .grad."""
    used, unused = th.nn.Parameter(th.ones(3)), th.nn.Parameter(th.ones(3))
    optimizer = th.optim.Adam([used, unused], lr=0.1)
    optimizer_step(optimizer, [used, unused], [th.ones(3), None])
    assert th.all(used < 1) and th.equal(unused, th.ones(3)) and unused not in optimizer.state


def test_gradients_have_their_parameters_strides():
    """CUDA's fused Adam refuses a gradient whose strides differ from its parameter's, even along a size-1 axis
    (the one-output critic head); the CPU's accepts it, so this is checked here, where no GPU is."""
    model = make_model()
    model.train(gradient_steps=2, batch_size=model.batch_size)
    trained = [(name, p) for name, p in model.policy.named_parameters() if p.requires_grad]
    assert trained and all(p.grad is not None for _, p in trained)
    for name, p in trained:
        assert p.grad.stride() == p.stride(), (name, p.stride(), p.grad.stride())


def test_the_compiled_step_is_one_graph_without_breaks():
    """``compile_step=True`` traces the whole step, optimizer steps and Polyak included, as one graph."""
    model = make_model()
    model.train(gradient_steps=1, batch_size=model.batch_size)  # Adam's first step creates its moments
    data = model.replay_buffer.sample(model.batch_size)
    with th._dynamo.config.patch(trace_autograd_ops=True):
        explanation = th._dynamo.explain(model._gradient_step)(data, True)
    assert explanation.graph_break_count == 0, [reason.reason for reason in explanation.break_reasons]
    assert explanation.graph_count == 1
    ops = {str(node.target) for graph in explanation.graphs for node in graph.graph.nodes}
    assert any("lerp" in op for op in ops)  # Polyak is in the graph


def test_the_compiled_step_matches_the_eager_step_over_100_steps_and_compiles_once(tmp_path):
    """
    ``compile_step=True``: the same numbers as the eager step over 100 gradient steps (same state, batches and
    noise), a learning-rate schedule that changes at every ``train()`` call never recompiles it, and the option
    survives save and load.
    """
    schedule = dict(learning_rate=lambda progress: 1e-3 * progress, target_update_interval=2)
    compiled, eager = make_model(compile_step=True, **schedule), make_model(**schedule)
    graphs = []
    for seed in range(25):
        for model in (compiled, eager):
            model._current_progress_remaining = 1.0 - seed / 25
        train_both((compiled, eager), seed, gradient_steps=4)
        graphs.append(th._dynamo.utils.counters["stats"]["unique_graphs"])
        for key, value in eager.logger.name_to_value.items():
            assert compiled.logger.name_to_value[key] == pytest.approx(value, rel=1e-4, abs=1e-5), key
    for (name, p), q in zip(compiled.policy.named_parameters(), eager.policy.parameters()):
        th.testing.assert_close(p, q, rtol=1e-4, atol=1e-5, msg=lambda m, n=name: f"{n}: {m}")
    assert compiled._n_updates == 100
    assert float(compiled.actor.optimizer.param_groups[0]["lr"]) == pytest.approx(1e-3 / 25)
    # The first train() call is eager (Adam creates its moments at its first step); the second compiles two graphs
    # (update_target True and False), and no call after it compiles anything
    assert graphs[1] - graphs[0] == 2 and graphs[2:] == graphs[1:2] * 23, graphs
    compiled.save(tmp_path / "compiled.zip")
    assert CustomSAC.load(tmp_path / "compiled.zip")._compiled_step is not None


@pytest.mark.skipif(not th.cuda.is_available(), reason="CUDA graphs need a GPU")
def test_the_step_replayed_as_cuda_graphs_matches_the_eager_step():
    """``compile_step="cudagraphs"``: the same numbers as the eager step, losses included, across several
    ``train()`` calls of several steps each."""
    replayed, eager = make_model(compile_step="cudagraphs", device="cuda"), make_model(device="cuda")
    for seed in range(4):
        train_both((replayed, eager), seed, gradient_steps=3)
        for key, value in eager.logger.name_to_value.items():
            assert replayed.logger.name_to_value[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    for (name, p), q in zip(replayed.policy.named_parameters(), eager.policy.parameters()):
        th.testing.assert_close(p, q, rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")
