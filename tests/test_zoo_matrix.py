"""Every combination of the zoo's env keys trains through episode ends, then evaluates, records a video and resumes.

Pendulum's episodes are cut to 20 steps (``env_kwargs: max_episode_steps``), so that 120 steps cross six episode
ends (three per env with two envs) in a second or two per combination. The video plays one env whatever ``n_envs``
and the algorithm, so it is recorded once per env chain (``n_envs=1``, CustomSAC): its encoding is most of the cost.
"""

import itertools

import numpy as np
import pytest
from stable_baselines3.common.callbacks import BaseCallback

from experiment.run import TrainSettings, train
from saving.safe_zip import read_zip_data

EPISODE, STEPS = 20, 120
TINY = {"learning_starts": 10, "batch_size": 8, "buffer_size": 500, "train_freq": 10, "landscape_freq": 0}
TINY["policy_kwargs"] = "dict(net_arch=[8])"
TIME_AWARE = "gymnasium.wrappers.TimeAwareObservation"
# (env_wrapper, frame_stack, normalize, n_envs) x algo: every combination
MATRIX = list(itertools.product([None, TIME_AWARE], [None, 3], [False, True], [1, 2], ["custom", "sb3"]))


class KeepBuffer(BaseCallback):
    """Keeps the model's replay buffer at the end of training, for the test to read."""

    def _on_step(self) -> bool:
        return True

    def _on_training_end(self) -> None:
        self.buffer = self.model.replay_buffer


def settings(tmp_path, algo: str, overrides: dict, n_timesteps: int = STEPS, resume: str | None = None):
    return TrainSettings(
        algo=algo,
        n_timesteps=n_timesteps,
        seed=0,
        overrides=overrides,
        log_folder=str(tmp_path),
        tensorboard_log=None,
        eval_freq=STEPS,
        eval_episodes=1,
        final_eval_episodes=1,
        save_freq=STEPS // 2,
        video_freq=0,
        env_kwargs={"max_episode_steps": EPISODE},
        resume=resume,
        progress=False,
        verbose=0,
    )


def check_frames(frames: np.ndarray, time_aware: bool) -> None:
    """
    Each stacked frame is Pendulum's own observation (cos, sin, velocity[, time]), or VecFrameStack's zeros; up to
    float error, as SB3 stores a terminal observation normalised and back (``unnormalize_obs``).
    """
    padding = np.all(frames == 0, axis=-1)
    unit = frames[..., 0] ** 2 + frames[..., 1] ** 2
    np.testing.assert_allclose(unit[~padding], 1.0, atol=1e-4)  # normalised values would not lie on the circle
    if time_aware:
        times = frames[..., 3][~padding]
        np.testing.assert_allclose(times, np.round(times), atol=1e-4)
        assert times.min() > -1e-4 and times.max() < EPISODE + 1e-4


@pytest.mark.parametrize(("wrapper", "frame_stack", "normalize", "n_envs", "algo"), MATRIX)
def test_zoo_env_keys_train_through_episode_ends_then_evaluate_record_and_resume(
    wrapper, frame_stack, normalize, n_envs, algo, tmp_path, run_script
):
    overrides = {**TINY, "n_envs": n_envs, "normalize": normalize}
    overrides |= {"env_wrapper": [wrapper]} if wrapper else {}
    overrides |= {"frame_stack": frame_stack} if frame_stack else {}
    keep = KeepBuffer()
    result = train(settings(tmp_path, algo, overrides), extra_callbacks=[keep])
    run_dir = result.run_dir

    # The replay buffer holds the env's own observations, stacked as the policy sees them, across episode ends
    frame = 3 + (wrapper is not None)
    buffer, rows = keep.buffer, STEPS // n_envs
    obs, next_obs = buffer.observations[:rows], buffer.next_observations[:rows]
    assert obs.shape == next_obs.shape == (rows, n_envs, frame * (frame_stack or 1))
    assert buffer.dones[:rows].sum() == buffer.timeouts[:rows].sum() == STEPS // EPISODE
    for stored in (obs, next_obs):
        check_frames(stored.reshape(rows, n_envs, -1, frame), wrapper is not None)
    within = buffer.dones[: rows - 1] == 0
    assert np.array_equal(next_obs[:-1][within], obs[1:][within])  # one trajectory, not two views of it
    ends = np.flatnonzero(buffer.dones[: rows - 1].any(axis=1))
    assert not np.allclose(next_obs[ends], obs[ends + 1])  # at an episode end: the terminal obs, not the reset one
    if wrapper is not None:  # the newest frame's time is the last step's
        np.testing.assert_allclose(next_obs[ends][..., -1], EPISODE, atol=1e-4)

    # evaluate.py rebuilds the same env chain from the run folder (and its frozen statistics)
    video = n_envs == 1 and algo == "custom"
    status, stderr = run_script("evaluate.py", [str(run_dir), "--episodes", "1", "--seed", "1", *["--video"] * video])
    assert status == 0, stderr
    if video:
        assert sorted(p.suffix for p in (run_dir / "videos").iterdir()) == [".gif", ".mp4"]
    assert (run_dir / "Pendulum-v1" / "vecnormalize.npz").is_file() == normalize

    # --resume continues from the newest checkpoint, through one more episode end
    resumed = train(settings(tmp_path, algo, {}, n_timesteps=STEPS + EPISODE * n_envs, resume=str(run_dir)))
    assert resumed.run_dir == run_dir
    assert read_zip_data(run_dir / "Pendulum-v1.zip")["num_timesteps"] == STEPS + EPISODE * n_envs
