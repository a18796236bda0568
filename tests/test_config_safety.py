"""A config never runs code: kwargs strings are parsed, names resolve only to the class their key claims, and a run
folder from elsewhere imports nothing outside the trusted packages without --trust-files."""

import shutil
from pathlib import Path

import pytest
import torch as th
import yaml

from experiment.config import load_hyperparams
from experiment.errors import ConfigError
from experiment.kwargs import parse_kwargs
from experiment.names import NAME_KEYS
from experiment.run import TrainSettings, train

ZOO_STRINGS = yaml.safe_load((Path(__file__).parent / "zoo_kwargs.yml").read_text())
TINY = {"learning_starts": 20, "batch_size": 16, "buffer_size": 500, "policy_kwargs": "dict(net_arch=[8])"}


@pytest.mark.parametrize(("key", "text"), [(k, s) for k, strings in ZOO_STRINGS.items() for s in strings])
def test_every_kwargs_string_of_the_zoo_parses_to_what_eval_made_of_it(key, text):
    reference = eval(text, {"__builtins__": {}}, {"dict": dict, "nn": th.nn, "th": th})  # the test's own data
    assert parse_kwargs(key, text) == reference


def test_classes_under_nn_th_nn_and_th_optim_and_nested_literals_parse():
    text = "{'a': (1, -2.5, +3), 'b': [None, True, 'x'], 'c': dict(d=th.nn.Tanh, e=th.optim.AdamW, f=nn.ELU)}"
    parsed = parse_kwargs("policy_kwargs", text)
    assert parsed == {
        "a": (1, -2.5, 3),
        "b": [None, True, "x"],
        "c": {"d": th.nn.Tanh, "e": th.optim.AdamW, "f": th.nn.ELU},
    }


CODE = [
    ("th.os.system('touch {m}')", "th.os.system('touch"),
    ("dict(a=__import__('os').system('touch {m}'))", "__import__('os').system('touch"),
    ("dict(a=th.os.system)", "th.os.system is"),
    ("dict(a=open('{m}', 'w'))", "open('"),
    ("dict(**{{'a': th.os.system('touch {m}')}})", "dict(**{'a'"),
    ("dict(a=[x for x in th.os.listdir('.')])", "[x for x in th.os.listdir('.')] is"),
    ("dict(a=(lambda: th.os.system('touch {m}'))())", "(lambda: th.os.system("),
    ("dict(a=nn.init.zeros_)", "nn.init.zeros_ is"),
    ("dict(a=nn.functional.relu)", "nn.functional.relu is"),
    ("dict(a=1 + 2)", "1 + 2 is"),
]


@pytest.mark.parametrize(("code", "named"), CODE)
def test_a_kwargs_string_that_reaches_further_is_refused_naming_the_node_and_runs_nothing(code, named, tmp_path):
    marker = tmp_path / "marker"
    text = code.format(m=marker)
    with pytest.raises(ConfigError, match=r"^policy_kwargs: .* is not allowed; use literals") as error:
        load_hyperparams("custom", "Pendulum-v1", overrides={"policy_kwargs": text})
    assert named in str(error.value) and "\n" not in str(error.value)
    assert not marker.exists()


def test_train_refuses_a_kwargs_string_reaching_os_in_one_line(tmp_path, run_script):
    marker = tmp_path / "marker"
    config = tmp_path / "evil.yml"
    config.write_text(yaml.safe_dump({"Pendulum-v1": {"policy_kwargs": f"dict(a=th.os.system('touch {marker}'))"}}))
    status, stderr = run_script("train.py", ["--config", str(config), "-f", str(tmp_path / "logs"), "-tb", ""])
    assert status == 1 and stderr.startswith("error: policy_kwargs: th.os.system('touch") and stderr.count("\n") == 1
    assert not marker.exists() and not (tmp_path / "logs").exists()


# Each would leave `marker` behind if it were called with the kwargs given.
def harmful(marker: Path) -> dict[str, dict]:
    return {
        "os.system": {"command": f"touch {marker}"},
        "subprocess.Popen": {"args": ["touch", str(marker)]},
        "builtins.exec": {},
        "builtins.open": {"file": str(marker), "mode": "w"},
    }


@pytest.mark.parametrize("key", list(NAME_KEYS))
@pytest.mark.parametrize("name", ["os.system", "subprocess.Popen", "builtins.exec", "builtins.open"])
def test_a_name_of_the_wrong_kind_is_refused_before_it_is_called(key, name, tmp_path):
    marker = tmp_path / "marker"
    value = name if key == "replay_buffer_class" else [{name: harmful(marker)[name]}]
    settings = TrainSettings(overrides={**TINY, key: value}, log_folder=str(tmp_path / "logs"), tensorboard_log=None)
    base = NAME_KEYS[key]
    with pytest.raises(ConfigError, match=rf"^{key} {name} is .*, not a subclass of {base.__module__}\."):
        train(settings)
    assert not marker.exists() and not (tmp_path / "logs").exists()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished 100-step run with a checkpoint, to plant names in."""
    logs = tmp_path_factory.mktemp("logs")
    settings = TrainSettings(
        n_timesteps=100,
        seed=0,
        overrides=TINY,
        log_folder=str(logs),
        tensorboard_log=None,
        eval_freq=100,
        eval_episodes=1,
        final_eval_episodes=1,
        save_freq=100,
        video_freq=0,
        progress=False,
        verbose=0,
    )
    return train(settings).run_dir


@pytest.mark.parametrize("key", [*NAME_KEYS, "gym_packages"])
@pytest.mark.parametrize("name", ["os.system", "subprocess.Popen", "builtins.exec"])
def test_a_run_folder_naming_a_module_outside_the_trusted_packages_is_refused(key, name, run_dir, tmp_path, run_script):
    folder = Path(shutil.copytree(run_dir, tmp_path / run_dir.name))
    marker = tmp_path / "marker"
    if key == "gym_packages":  # a module imported for its side effect of registering envs
        name = name.rpartition(".")[0]
        args = yaml.safe_load((folder / "args.yml").read_text())
        (folder / "args.yml").write_text(yaml.safe_dump({**args, "gym_packages": [name]}))
    else:
        value = name if key == "replay_buffer_class" else [{name: harmful(marker)[name]}]
        config = yaml.safe_load((folder / "config.yml").read_text())
        (folder / "config.yml").write_text(yaml.safe_dump({**config, key: value}))
    module = name.rpartition(".")[0] or name
    scripts = [("evaluate.py", [str(folder)])]
    if name == "os.system":  # --resume reads the folder through the same check: one name is enough there
        scripts.append(("train.py", ["--resume", str(folder), "-n", "200"]))
    for script, args in scripts:
        status, stderr = run_script(script, args)
        assert status == 1 and stderr.count("\n") == 1
        assert stderr.startswith(f"error: {folder} would import {module} ({key}), outside gymnasium,")
        assert stderr.rstrip().endswith(f"pass --trust-files only if you trust {folder}")
        if key != "gym_packages":  # trusted, the module is imported, and the name refused for what it is
            status, stderr = run_script(script, [*args, "--trust-files"])
            assert status == 1 and stderr.startswith(f"error: {key} {name} is ") and stderr.count("\n") == 1
    assert not marker.exists()


def test_an_untrusted_module_is_not_even_imported(run_dir, tmp_path, run_script, monkeypatch):
    """The check reads the names only: a module that would announce its import is never imported."""
    package = tmp_path / "site" / "announce.py"
    package.parent.mkdir()
    marker = tmp_path / "imported"
    package.write_text(f"open({str(marker)!r}, 'w').close()\n")
    monkeypatch.syspath_prepend(str(package.parent))
    folder = Path(shutil.copytree(run_dir, tmp_path / run_dir.name))
    config = yaml.safe_load((folder / "config.yml").read_text())
    (folder / "config.yml").write_text(yaml.safe_dump({**config, "env_wrapper": "announce.Wrapper"}))
    status, stderr = run_script("evaluate.py", [str(folder)])
    assert status == 1 and "would import announce (env_wrapper)" in stderr
    assert not marker.exists()
    status, stderr = run_script("evaluate.py", [str(folder), "--trust-files"])
    assert status == 1 and "env_wrapper 'announce.Wrapper' cannot be imported" in stderr
    assert marker.exists()  # trusted: imported, and refused as it names nothing
