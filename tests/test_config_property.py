"""Random zoo entries, valid and invalid, through the whole config validation: each is accepted, or refused with one
line (a UserError); no other exception, no traceback."""

from pathlib import Path
from typing import Any

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from experiment.config import model_kwargs, valid_keys, validate
from experiment.envs import check_env_id
from experiment.errors import UserError
from experiment.zoo import check_run_keys, env_spec

ZOO_STRINGS = [
    s for strings in yaml.safe_load((Path(__file__).parent / "zoo_kwargs.yml").read_text()).values() for s in strings
]
JUNK = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(10**9), 10**9),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=12),
    st.lists(st.integers(-3, 3), max_size=3),
    st.dictionaries(st.text(max_size=4), st.integers(-3, 3), max_size=2),
)
NUMBER_WORDS = st.sampled_from(["1e-3", "lin_7.3e-4", "lin_x", "auto", "auto_0.1", "auto_-1", "inf", "nan", "-1", "0"])
KWARGS = st.one_of(
    st.sampled_from(ZOO_STRINGS),
    st.sampled_from(
        [
            "dict(net_arch=[8])",
            "dict(a=th.os.system('true'))",
            "dict(",
            "[1, 2]",
            "dict(**x)",
            "{'a': nn.ReLU}",
            "dict(activation_fn=nn.NoSuch)",
            "dict(n_critics=0)",
            "dict(n_critics='2')",
            "{[1]: 2}",
            "dict(a=-'x')",
        ]
    ),
    st.dictionaries(st.sampled_from(["net_arch", "n_critics", "norm_obs", "g", "info_keywords"]), JUNK, max_size=2),
)
NAMES = st.sampled_from(
    [
        "gymnasium.wrappers.TimeAwareObservation",
        "sb3_contrib.common.wrappers.TimeFeatureWrapper",
        "stable_baselines3.common.vec_env.VecFrameStack",
        "stable_baselines3.common.callbacks.StopTrainingOnMaxEpisodes",
        "stable_baselines3.common.buffers.ReplayBuffer",
        "HerReplayBuffer",
        "ReplayBuffer",
        "os.system",
        "subprocess.Popen",
        "builtins.exec",
        "no_such_module.Thing",
        "gymnasium.wrappers.NoSuch",
        "",
        "x",
        ".x",
        "x.",
    ]
)
NAMED = st.one_of(
    NAMES,
    st.lists(NAMES, max_size=2),
    st.dictionaries(NAMES, st.one_of(st.none(), st.just({"max_episodes": 2}), JUNK), min_size=1, max_size=2),
    JUNK,
)
SPECIFIC: dict[str, Any] = {
    "policy": st.sampled_from(["MlpPolicy", "CnnPolicy", "MultiInputPolicy", "mlp", "TinyPolicy"]),
    "train_freq": st.one_of(st.just([1, "episode"]), st.just([2, "step"]), st.just([0, "step"]), st.just([1, "x"])),
    "normalize": st.one_of(st.booleans(), KWARGS),
    "noise_type": st.sampled_from(["normal", "ornstein-uhlenbeck", "pink", None]),
    "vec_env_wrapper": NAMED,
    "env_wrapper": NAMED,
    "callback": NAMED,
    "replay_buffer_class": NAMED,
}
for key in ("policy_kwargs", "replay_buffer_kwargs", "env_kwargs", "monitor_kwargs"):
    SPECIFIC[key] = KWARGS
KEYS = {algo: sorted(valid_keys(algo)) for algo in ("custom", "sb3")}
BAD_KEYS = st.one_of(st.sampled_from(["learning_rat", "n_timestep", "qf_learning_rate", "env", "seed"]), st.integers())
PLAUSIBLE = st.one_of(st.integers(0, 1000), st.floats(0, 1), st.booleans(), NUMBER_WORDS)


@st.composite
def entries(draw: st.DrawFn) -> tuple[str, dict[Any, Any]]:
    """An algorithm and up to four of its keys with plausible or junk values, now and then with a key it lacks."""
    algo = draw(st.sampled_from(list(KEYS)))
    keys = draw(st.lists(st.sampled_from(KEYS[algo]), max_size=4, unique=True))
    entry = {key: draw(st.one_of(SPECIFIC.get(key, PLAUSIBLE), JUNK)) for key in keys}
    if draw(st.sampled_from([False] * 9 + [True])):
        entry[draw(BAD_KEYS)] = draw(JUNK)
    return algo, entry


@settings(max_examples=300, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
@given(drawn=entries())
def test_any_zoo_entry_is_accepted_or_refused_in_one_line(drawn):
    algo, entry = drawn
    hyperparams = dict(entry)
    try:
        validate(algo, hyperparams)
        check_env_id("Pendulum-v1", env_spec("Pendulum-v1", hyperparams).env_kwargs)
        check_run_keys(hyperparams)
        model_kwargs(hyperparams)
    except UserError as e:
        assert str(e).strip() and "\n" not in str(e).strip()
