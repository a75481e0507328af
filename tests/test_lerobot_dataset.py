"""LeRobotDataset v3 (sim/datasets/lerobot_v3.py): the reader loads a dataset laid out by the
format's definition (tests/fixtures/lerobot_v3_tiny, written by make_lerobot_v3_fixture.py
without our writer), and what our writer writes reads back identically, with the documented
layout, atomically, and with errors that name the file."""

import importlib.util
import json
import shutil
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from embodied_stack.sim.datasets.lerobot_v3 import (
    DatasetFormatError,
    DatasetWriter,
    LeRobotDataset,
    feature_stats,
)

FIXTURES = Path(__file__).parent / "fixtures"
TINY = FIXTURES / "lerobot_v3_tiny"
# The fixture's generator, for the values it wrote (loaded from its file: not a test module).
_loader = importlib.util.spec_from_file_location("make_lerobot_v3_fixture",
                                                 FIXTURES / "make_lerobot_v3_fixture.py")
assert _loader is not None and _loader.loader is not None
spec = importlib.util.module_from_spec(_loader)
_loader.loader.exec_module(spec)


def test_reads_a_dataset_laid_out_by_the_spec():
    ds = LeRobotDataset(TINY)
    assert ds.fps == 10 and ds.num_episodes == 3 and ds.num_frames == sum(spec.LENGTHS)
    assert ds.tasks == list(spec.TASKS)
    assert ds.video_keys == [spec.CAMERA]
    first = 0
    for e, n in enumerate(spec.LENGTHS):
        ep = ds.episode(e)
        want = spec.episode_columns(e, first)
        assert len(ep) == n
        # Episode boundaries: the rows of this episode only, in order, with its global indices.
        assert ep.frames["episode_index"].tolist() == [e] * n
        assert ep.frames["index"].tolist() == list(range(first, first + n))
        assert ep.tasks == [spec.TASKS[spec.EPISODE_TASK[e]]] * n
        np.testing.assert_array_equal(ep.frames["action"], want["action"])
        np.testing.assert_array_equal(ep.frames["observation.state"], want["observation.state"])
        assert ep.frames["next.done"].tolist() == want["next.done"].tolist()
        # Frames decoded from the shared MP4 at from_timestamp + timestamp (AV1 is lossy).
        images = ep.frames[spec.CAMERA]
        assert images.shape == (n, 64, 64, 3) and images.dtype == np.uint8
        expected = np.stack([spec.frame_image(e, i) for i in range(n)]).astype(int)
        assert np.abs(images.astype(int) - expected).mean() < 4
        # ... and the right frame: the moving square is where frame i puts it.
        for i in range(n):
            x = 8 * i % 48
            assert images[i, 32, x + 8, 2] < 100 < images[i, 32, x + 8, 0]
        first += n
    # Data files hold several episodes; the episode table says where each is.
    assert [r["data/file_index"] for r in ds.episodes] == [0, 0, 1]
    assert ds.episodes[2][f"videos/{spec.CAMERA}/from_timestamp"] == pytest.approx(1.0)
    # Statistics from meta/stats.json, shaped as lerobot stores them.
    assert ds.stats["action"]["mean"].shape == (6,)
    assert ds.stats[spec.CAMERA]["mean"].shape == (3, 1, 1)
    assert ds.stats["action"]["count"][0] == sum(spec.LENGTHS)
    actions = np.concatenate([spec.episode_columns(e, 0)["action"] for e in range(3)])
    np.testing.assert_allclose(ds.stats["action"]["min"], actions.min(0), rtol=1e-6)
    np.testing.assert_allclose(ds.stats["action"]["mean"], actions.mean(0), rtol=1e-5)


def _episodes(seed=0, lengths=(7, 3, 9, 5)):
    rng = np.random.default_rng(seed)
    out = []
    for e, n in enumerate(lengths):
        image = np.zeros((n, 64, 64, 3), np.uint8)
        for i in range(n):
            image[i, :, :, 0] = 30 * e
            image[i, 8 * i % 56: 8 * i % 56 + 8, :, 1] = 220
        out.append(({
            "observation.images.color": image,
            "observation.depth": rng.uniform(0.2, 30, (n, 64, 64, 1)).astype(np.float32),
            "observation.state": rng.normal(size=(n, 4)).astype(np.float32),
            "action": rng.uniform(-1, 1, (n, 2)).astype(np.float32),
        }, f"task {e % 2}"))
    return out


FEATURES = {
    "observation.images.color": {"dtype": "video", "shape": [64, 64, 3]},
    "observation.depth": {"dtype": "float32", "shape": [64, 64, 1],
                          "names": ["height", "width", "channel"]},
    "observation.state": {"dtype": "float32", "shape": [4], "names": ["a", "b", "c", "d"]},
    "action": {"dtype": "float32", "shape": [2], "names": ["steer", "accel"]},
}


@pytest.mark.parametrize("codec,tolerance", [("av1", 6.0), ("h264-lossless", 1.0)])
def test_writer_output_reads_back_identically_with_the_documented_layout(tmp_path, codec, tolerance):
    root = tmp_path / "ds"
    episodes = _episodes()
    with DatasetWriter(root, 15, FEATURES, robot_type="embodied_stack/driving", codec=codec,
                       data_files_size_in_mb=0.1) as writer:
        for frames, task in episodes:
            writer.add_episode(frames, task)
    info = json.loads((root / "meta/info.json").read_text())
    assert info["codebase_version"] == "v3.0" and info["fps"] == 15
    assert info["total_episodes"] == 4 and info["total_frames"] == 24 and info["total_tasks"] == 2
    assert info["data_path"] == "data/chunk-{chunk_index:03d}/file-{file_index:03d}.parquet"
    assert info["video_path"] == "videos/{video_key}/chunk-{chunk_index:03d}/file-{file_index:03d}.mp4"
    assert {"chunks_size", "data_files_size_in_mb", "video_files_size_in_mb", "splits"} <= set(info)
    video_info = info["features"]["observation.images.color"]["info"]
    assert video_info["video.fps"] == 15 and video_info["video.height"] == 64
    assert video_info["video.codec"] == {"av1": "av1", "h264-lossless": "h264"}[codec]  # as ffprobe names it
    assert set(info["features"]) >= {"timestamp", "frame_index", "episode_index", "index", "task_index"}
    # Several episodes per file, rolled over at the size limit (4 x ~100 KB of depth).
    data_files = sorted(p.relative_to(root).as_posix() for p in (root / "data").rglob("*.parquet"))
    assert data_files[0] == "data/chunk-000/file-000.parquet" and len(data_files) >= 2
    assert sum(pq.read_metadata(root / f).num_rows for f in data_files) == 24
    videos = list((root / "videos/observation.images.color").rglob("*.mp4"))
    assert [p.relative_to(root).as_posix() for p in videos] == [
        "videos/observation.images.color/chunk-000/file-000.mp4"]
    tasks = pq.read_table(root / "meta/tasks.parquet")
    assert tasks.column("task").to_pylist() == ["task 0", "task 1"]
    assert json.loads(tasks.schema.metadata[b"pandas"])["index_columns"] == ["task"]
    table = pq.read_table(root / "meta/episodes/chunk-000/file-000.parquet")
    for column in ("episode_index", "tasks", "length", "data/chunk_index", "data/file_index",
                   "dataset_from_index", "dataset_to_index",
                   "videos/observation.images.color/from_timestamp",
                   "videos/observation.images.color/to_timestamp", "meta/episodes/chunk_index",
                   "stats/action/mean", "stats/observation.images.color/q99"):
        assert column in table.column_names, column
    assert table.column("videos/observation.images.color/from_timestamp").to_pylist() == \
        pytest.approx([0, 7 / 15, 10 / 15, 19 / 15])
    # Read back: identical arrays, tasks, boundaries; frames within the codec's error.
    ds = LeRobotDataset(root)
    assert ds.tasks == ["task 0", "task 1"]
    for e, (frames, task) in enumerate(episodes):
        ep = ds.episode(e)
        assert ep.tasks == [task] * len(ep)
        for key in ("observation.depth", "observation.state", "action"):
            np.testing.assert_array_equal(ep.frames[key], frames[key])
        err = np.abs(ep.frames["observation.images.color"].astype(int)
                     - frames["observation.images.color"].astype(int))
        assert err.mean() <= tolerance, err.mean()
        assert ep.frames["timestamp"].tolist() == pytest.approx(np.arange(len(ep)) / 15)
    actions = np.concatenate([f["action"] for f, _ in episodes])
    np.testing.assert_allclose(ds.stats["action"]["mean"], actions.mean(0), rtol=1e-5)
    np.testing.assert_allclose(ds.stats["action"]["std"], actions.std(0), rtol=1e-5)
    np.testing.assert_array_equal(ds.stats["action"]["max"], actions.max(0))
    assert ds.stats["observation.depth"]["mean"].shape == (1, 1, 1)
    assert ds.stats["observation.images.color"]["mean"].shape == (3, 1, 1)


def test_feature_stats_match_lerobots_shapes():
    x = np.random.default_rng(0).uniform(size=(10, 3)).astype(np.float32)
    st = feature_stats(x)
    assert set(st) == {"min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99"}
    assert st["mean"].shape == (3,) and st["count"].tolist() == [10]
    video = feature_stats(np.full((4, 8, 8, 3), 255, np.uint8), video=True)
    assert video["mean"].shape == (3, 1, 1) and np.all(video["mean"] == 1.0)


def test_writes_are_atomic_and_refuse_to_overwrite(tmp_path):
    root = tmp_path / "ds"
    with pytest.raises(RuntimeError, match="boom"):
        with DatasetWriter(root, 15, FEATURES) as writer:
            writer.add_episode(*_episodes()[0])
            raise RuntimeError("boom")
    assert list(tmp_path.iterdir()) == []  # nothing at root, no partial folder left
    root.mkdir()
    with pytest.raises(FileExistsError, match="already exists"):
        DatasetWriter(root, 15, FEATURES)


def test_a_frame_out_of_order_from_the_encoder_stops_the_writer_plainly(tmp_path, monkeypatch):
    # SVT-AV1 has returned packets out of order (docs/training.md): the writer must say so and
    # keep nothing, not renumber them (frames would pair with the wrong rows) nor fail as EINVAL.
    from embodied_stack.sim.datasets import lerobot_v3

    mux, seen = lerobot_v3._VideoFile._mux, []

    def faulty_mux(self, packet):
        seen.append(packet.pts)
        if len(seen) == 5:  # the encoder hands back an earlier frame's time
            packet.pts = packet.dts = 1
        mux(self, packet)

    monkeypatch.setattr(lerobot_v3._VideoFile, "_mux", faulty_mux)
    root = tmp_path / "ds"
    out_of_order = r"returned a packet \(frame 1, decode time 1\) after decode time \d+; nothing was kept"
    with pytest.raises(RuntimeError, match=out_of_order):
        with DatasetWriter(root, 15, FEATURES, codec="h264") as writer:
            for episode in _episodes():
                writer.add_episode(*episode)
            writer.finalize()
    assert list(tmp_path.iterdir()) == []


def test_writer_rejects_bad_episodes_by_name(tmp_path):
    writer = DatasetWriter(tmp_path / "ds", 15, FEATURES)
    frames, task = _episodes()[0]
    with pytest.raises(ValueError, match="'action' has shape"):
        writer.add_episode({**frames, "action": frames["action"][:, :1]}, task)
    with pytest.raises(ValueError, match=r"missing \['observation.state'\]"):
        writer.add_episode({k: v for k, v in frames.items() if k != "observation.state"}, task)
    writer.abort()
    assert not (tmp_path / "ds").exists()


def test_errors_name_the_bad_file_and_field(tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(TINY, root)
    info = json.loads((root / "meta/info.json").read_text())
    (root / "meta/info.json").write_text(json.dumps({**info, "codebase_version": "v2.1"}))
    with pytest.raises(DatasetFormatError, match=r"info.json: codebase_version 'v2.1'"):
        LeRobotDataset(root)
    (root / "meta/info.json").write_text(json.dumps(info))
    (root / "data/chunk-000/file-001.parquet").unlink()
    ds = LeRobotDataset(root)
    ds.episode(0)
    with pytest.raises(DatasetFormatError, match=r"file-001.parquet: data file .* missing"):
        ds.episode(2)
    (root / "meta/tasks.parquet").unlink()
    with pytest.raises(DatasetFormatError, match="missing meta/tasks.parquet"):
        LeRobotDataset(root)
