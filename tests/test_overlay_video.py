"""Annotated videos: the pure overlay, the mp4/gif files decoded back, and the TensorBoard summary read back."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import gymnasium as gym
import imageio
import numpy as np
import pytest
from PIL import Image
from stable_baselines3 import SAC
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from callbacks import AnnotatedVideoCallback, annotate_frame, overlay_layout, record_episode, write_video
from experiment.envs import make_env

REPO = Path(__file__).resolve().parents[1]
EPISODE = 50  # short Pendulum episodes keep encoding fast


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def _video_env() -> gym.Env:
    return gym.make("Pendulum-v1", render_mode="rgb_array", max_episode_steps=EPISODE)


def _raw_episode(n: int = 12) -> tuple[list[np.ndarray], list[float], list[np.ndarray]]:
    env = _video_env()
    env.reset(seed=3)
    frames, rewards, actions = [], [], []
    for i in range(n):
        frames.append(np.asarray(env.render()))
        action = np.array([np.sin(i / 3.0) * 2.0], dtype=np.float32)
        rewards.append(float(env.step(action)[1]))
        actions.append(action)
    env.close()
    return frames, rewards, actions


def _annotate_all(frames, rewards, actions) -> list[np.ndarray]:
    return [
        annotate_frame(
            f,
            train_step=1234,
            episode_step=i + 1,
            max_steps=EPISODE,
            reward=rewards[i],
            episode_return=sum(rewards[: i + 1]),
            action=actions[i],
            rewards_so_far=rewards[: i + 1],
        )
        for i, f in enumerate(frames)
    ]


def test_annotate_frame_changes_only_the_box_and_adds_a_live_strip() -> None:
    raw, rewards, actions = _raw_episode()
    annotated = _annotate_all(raw, rewards, actions)
    height, width = raw[0].shape[:2]
    layout = overlay_layout(height, width)
    x0, y0, x1, y1 = layout.box
    assert (height, width) == (500, 500)
    for before, after in zip(raw, annotated, strict=True):
        assert after.shape == (height + layout.strip_height, width, 3) and after.dtype == np.uint8
        assert after.shape[0] % 2 == 0 and after.shape[1] % 2 == 0  # H.264 needs even sizes
        # Outside the text box the raw render is untouched, bit for bit.
        outside = np.ones((height, width), dtype=bool)
        outside[y0:y1, x0:x1] = False
        assert np.array_equal(after[:height][outside], before[outside])
        # Inside it: darkened background plus white text.
        box_after, box_before = after[y0:y1, x0:x1].astype(int), before[y0:y1, x0:x1].astype(int)
        assert np.abs(box_after - box_before).mean() > 30
        assert (after[y0:y1, x0:x1] > 240).all(axis=-1).sum() > 200, "no readable white text in the box"
    strips = [a[height:] for a in annotated]
    for prev, cur in itertools.pairwise(strips):
        assert not np.array_equal(prev, cur), "the reward strip must change from frame to frame"
    # The text itself depends on the values: another reward gives another box.
    other = annotate_frame(
        raw[0],
        train_step=1234,
        episode_step=1,
        max_steps=EPISODE,
        reward=-9.0,
        episode_return=-9.0,
        action=actions[0],
        rewards_so_far=[-9.0],
    )
    assert not np.array_equal(other[y0:y1], annotated[0][y0:y1])


def test_annotate_frame_rejects_bad_frames() -> None:
    values = dict(train_step=0, episode_step=1, max_steps=None, reward=0.0, episode_return=0.0, action=0)
    with pytest.raises(ValueError, match="uint8"):
        annotate_frame(np.zeros((64, 64, 3), dtype=np.float32), rewards_so_far=[0.0], **values)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        annotate_frame(np.zeros((64, 64), dtype=np.uint8), rewards_so_far=[0.0], **values)
    with pytest.raises(ValueError, match="render_mode='rgb_array'"):
        record_episode(None, gym.make("Pendulum-v1"))
    with pytest.raises(ValueError, match="no frames"):
        write_video([], "/tmp/never")


def test_write_video_pads_odd_sizes(tmp_path: Path) -> None:
    frames = [np.full((33, 47, 3), 10 * i, dtype=np.uint8) for i in range(6)]
    mp4, gif = write_video(frames, tmp_path / "odd", fps=10)
    reader = imageio.get_reader(mp4, "ffmpeg")
    decoded = [f for f in reader]
    reader.close()
    assert len(decoded) == 6 and decoded[0].shape == (34, 48, 3)
    assert abs(float(decoded[3].mean()) - 30) < 3
    assert Image.open(gif).n_frames == 6


def test_write_video_holds_no_copy_of_the_frames(tmp_path: Path) -> None:
    """Writing 100 RGB frames of 500x500 (72 MiB) raises the process's peak by less than the frames themselves."""
    script = textwrap.dedent(f"""
        import resource, moviepy, numpy as np  # moviepy imported first: its import is not the writing
        from callbacks.video import write_video
        frames = [np.random.default_rng(i).integers(0, 4, (500, 500, 3), dtype=np.uint8) * 64 for i in range(100)]
        peak = lambda: resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
        before = peak()
        write_video(frames, {str(tmp_path / "big")!r}, fps=30)
        print(peak() - before, sum(f.nbytes for f in frames) / 2**20)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    growth, frames_mib = map(float, proc.stdout.split())
    assert growth < 0.7 * frames_mib, (growth, frames_mib)  # moviepy's own GIF writer: 1.7x the frames
    assert Image.open(tmp_path / "big.gif").n_frames == 100


def test_callback_writes_mp4_gif_and_tensorboard_video(tmp_path: Path) -> None:
    model = SAC(
        "MlpPolicy",
        "Pendulum-v1",
        learning_starts=50,
        buffer_size=1_000,
        batch_size=32,
        policy_kwargs=dict(net_arch=[16, 16]),
        tensorboard_log=str(tmp_path / "tb"),
        seed=0,
        device="cpu",
    )
    callback = AnnotatedVideoCallback(_video_env, video_freq=60, video_folder=tmp_path / "videos", fps=25, seed=7)
    model.learn(120, callback=callback)

    videos = sorted((tmp_path / "videos").iterdir())
    assert [p.name for p in videos] == ["120.gif", "120.mp4", "60.gif", "60.mp4"]

    # Decode the mp4 back: one frame per step of the episode, annotated size.
    reader = imageio.get_reader(tmp_path / "videos" / "120.mp4", "ffmpeg")
    decoded = np.stack([f for f in reader])
    assert reader.get_meta_data()["fps"] == 25
    reader.close()
    layout = overlay_layout(500, 500)
    assert decoded.shape == (EPISODE, 500 + layout.strip_height, 500, 3)

    # The same seeded episode replayed with the same (final) policy: raw and annotated, in memory.
    env = _video_env()
    raw, rewards = record_episode(model, env, train_step=120, seed=7 + 120, annotate=False)
    annotated, rewards2 = record_episode(model, env, train_step=120, seed=7 + 120)
    assert rewards == rewards2 and len(raw) == EPISODE
    # Lossy codec: compare on averages. The mp4 matches the annotated frames everywhere...
    assert np.abs(decoded.astype(int) - np.stack(annotated).astype(int)).mean() < 4
    # ...differs from the raw render in the text box, and matches it below the box.
    y1 = layout.box[3]
    raw_stack = np.stack(raw).astype(int)
    assert np.abs(decoded[:, :y1].astype(int) - raw_stack[:, :y1]).mean() > 30
    assert np.abs(decoded[:, y1 + 8 : 500].astype(int) - raw_stack[:, y1 + 8 :]).mean() < 2
    # The strip moves in the decoded video too.
    strip_changes = np.abs(np.diff(decoded[:, 500:].astype(int), axis=0)).mean(axis=(1, 2, 3))
    assert (strip_changes > 0.05).all()

    gif = Image.open(tmp_path / "videos" / "120.gif")
    assert gif.n_frames == EPISODE and gif.size == (500, 500 + layout.strip_height)

    # TensorBoard: an animated GIF image summary (what TensorBoard shows as a video) at each recording step.
    (run_dir,) = (tmp_path / "tb").iterdir()
    events = EventAccumulator(str(run_dir), size_guidance={"images": 0})
    events.Reload()
    assert "trajectory/video" in events.Tags()["images"]
    summaries = events.Images("trajectory/video")
    assert [s.step for s in summaries] == [60, 120]
    assert summaries[-1].encoded_image_string[:6] == b"GIF89a"
    assert (summaries[-1].width, summaries[-1].height) == (500, 500 + layout.strip_height)
    # Excluded from the non-TensorBoard outputs: the video never goes through the key-value logger.
    assert "trajectory/video" not in model.logger.name_to_value


def test_rendering_back_ends_are_chosen_where_a_rendering_env_is_made_and_only_where_unset(monkeypatch):
    for name in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER", "MUJOCO_GL", "PYOPENGL_PLATFORM"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MUJOCO_GL", "osmesa")  # the user's choice
    make_env("Pendulum-v1").close()
    assert "SDL_VIDEODRIVER" not in os.environ  # an env that does not render chooses nothing
    env = make_env("Pendulum-v1", render_mode="rgb_array")
    env.reset()
    assert env.render().ndim == 3
    env.close()
    assert (os.environ["SDL_VIDEODRIVER"], os.environ["MUJOCO_GL"], os.environ["PYOPENGL_PLATFORM"]) == (
        "dummy",
        "osmesa",
        "osmesa",
    )
