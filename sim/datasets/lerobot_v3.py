"""LeRobotDataset v3.0 read and write with pyarrow and PyAV.

The ``lerobot`` package itself does not install beside this project's pins (pip reports
ResolutionImpossible against torch 2.13, mujoco 4.0.0, gymnasium and huggingface-hub), so the
format is implemented here from its definition: lerobot's ``src/lerobot/datasets/utils.py``
(path templates, ``DatasetInfo``), ``dataset_writer.py`` / ``dataset_metadata.py`` (episode
rows, file roll-over), ``compute_stats.py`` (statistics) and ``docs/source/lerobot-dataset-v3.mdx``.

    meta/info.json                           codebase_version "v3.0", fps, features (dtype, shape,
                                             names; video features with their encoding), totals,
                                             chunks_size, data/video file sizes, path templates
    meta/stats.json                          per feature: min, max, mean, std, count, q01..q99
    meta/tasks.parquet                       the task strings (the pandas index "task") -> task_index
    meta/episodes/chunk-000/file-000.parquet one row per episode: episode_index, tasks, length,
                                             data/chunk_index, data/file_index,
                                             dataset_from_index, dataset_to_index,
                                             videos/<key>/{chunk_index,file_index,from_timestamp,
                                             to_timestamp}, meta/episodes/{chunk_index,file_index},
                                             stats/<feature>/<stat>
    data/chunk-XXX/file-XXX.parquet          one row per frame, many episodes per file: the
                                             features, timestamp, frame_index, episode_index, index,
                                             task_index
    videos/<key>/chunk-XXX/file-XXX.mp4      the frames of many episodes one after another; an
                                             episode's frame i is at from_timestamp + timestamp_i

A file rolls over to the next (file-001, ...; chunk-001 after ``chunks_size`` files) when it
would pass ``data_files_size_in_mb`` / ``video_files_size_in_mb``. The writer builds the whole
dataset in a hidden folder beside ``root`` and renames it into place at the end, so a reader
never sees a half-written dataset, and an interrupted write leaves nothing at ``root``.
Errors name the file and the field at fault.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any, cast

import numpy as np

CODEBASE_VERSION = "v3.0"
INFO_PATH = "meta/info.json"
STATS_PATH = "meta/stats.json"
TASKS_PATH = "meta/tasks.parquet"
CHUNK_FILE_PATTERN = "chunk-{chunk_index:03d}/file-{file_index:03d}"
EPISODES_PATH = "meta/episodes/" + CHUNK_FILE_PATTERN + ".parquet"
DATA_PATH = "data/" + CHUNK_FILE_PATTERN + ".parquet"
VIDEO_PATH = "videos/{video_key}/" + CHUNK_FILE_PATTERN + ".mp4"
DEFAULT_CHUNK_SIZE = 1000  #: files per chunk folder
DEFAULT_DATA_FILE_SIZE_IN_MB = 100
DEFAULT_VIDEO_FILE_SIZE_IN_MB = 200
#: The columns every data file has besides the dataset's own features (lerobot's DEFAULT_FEATURES).
DEFAULT_FEATURES: dict[str, dict[str, Any]] = {
    "timestamp": {"dtype": "float32", "shape": [1], "names": None},
    "frame_index": {"dtype": "int64", "shape": [1], "names": None},
    "episode_index": {"dtype": "int64", "shape": [1], "names": None},
    "index": {"dtype": "int64", "shape": [1], "names": None},
    "task_index": {"dtype": "int64", "shape": [1], "names": None},
}
QUANTILES = (0.01, 0.10, 0.50, 0.90, 0.99)
STAT_KEYS = ("min", "max", "mean", "std", "count", "q01", "q10", "q50", "q90", "q99")
#: Video encodings: name -> (encoder, pixel format, encoder options). "av1" is lerobot's
#: default (SVT-AV1, yuv420p, a key frame every 2 frames, crf 30); "h264-lossless" keeps every
#: pixel (to within RGB <-> YUV rounding) at ~10x the size.
#: SVT-AV1 runs with lp=1 (one thread per stage): with its default parallelism, the 4.1
#: bundled in PyAV's wheels, sharing a 2-core machine with numpy's OpenBLAS threads (the
#: statistics computed between episodes), handed back packets out of order or deadlocked in 4 of
#: 6 conversions of a 100-episode Meta-World bag, and 0 of 22 with lp=1 (docs/training.md).
#: It costs ~0.7 ms a 64x64 frame, small beside recording.
CODECS = {
    "av1": ("libsvtav1", "yuv420p", {"g": "2", "crf": "30", "svtav1-params": "lp=1"}),
    "h264": ("libx264", "yuv420p", {"g": "2", "crf": "23"}),
    "h264-lossless": ("libx264", "yuv444p", {"g": "2", "crf": "0"}),
}
#: Frames per episode used for a video's statistics (evenly spaced; lerobot samples too).
VIDEO_STATS_FRAMES = 100
#: How far (s) a decoded frame's time may be from the one the episode table asks for.
TIMESTAMP_TOLERANCE_S = 1e-3


class DatasetFormatError(ValueError):
    """A file of the dataset does not follow LeRobotDataset v3; the message names it."""


# ------------------------------------------------------------------------------------------
# Statistics (lerobot's compute_stats.py: per episode, then aggregated over episodes)
# ------------------------------------------------------------------------------------------


def feature_stats(values: np.ndarray, video: bool = False) -> dict[str, np.ndarray]:
    """Statistics of one feature over the frames of an episode. ``values`` is (n, *shape).

    Vectors give per-element stats (shape (d,)); arrays with two or more dims (a depth image
    (H, W, C)) per-channel stats over all pixels, shaped (1, ..., 1, C); videos, given as
    uint8 (n, H, W, 3), per-channel stats of the pixels in [0, 1], shaped (3, 1, 1) as lerobot
    stores them (channel first). NaN entries (a privileged feature with no value) are left
    out; an element with none has NaN stats (null in stats.json)."""
    x = np.asarray(values)
    if video:
        x = x.astype(np.float64).transpose(0, 3, 1, 2) / 255.0  # (n, C, H, W)
        axes: tuple[int, ...] = (0, 2, 3)
        keep = True
    elif x.ndim <= 2:
        x = x.reshape(len(x), -1).astype(np.float64)
        axes, keep = (0,), False
    else:
        x = x.astype(np.float64)
        axes, keep = tuple(range(x.ndim - 1)), True
    if not len(x):
        raise ValueError("statistics of an empty feature")
    with warnings.catch_warnings():  # (an all-NaN element: NaN, said in the docstring)
        warnings.simplefilter("ignore", RuntimeWarning)
        out = {
            "min": np.nanmin(x, axis=axes, keepdims=keep), "max": np.nanmax(x, axis=axes, keepdims=keep),
            "mean": np.nanmean(x, axis=axes, keepdims=keep), "std": np.nanstd(x, axis=axes, keepdims=keep),
            "count": np.array([len(values)]),
        }
        qs = np.nanquantile(x, QUANTILES, axis=axes, keepdims=keep)
    for q, v in zip(QUANTILES, qs):
        out[f"q{round(q * 100):02d}"] = v
    if video:  # (1, C, 1, 1) -> (C, 1, 1)
        out = {k: (v if k == "count" else v[0]) for k, v in out.items()}
    elif keep:
        out = {k: (v if k == "count" else v.reshape((1,) * (x.ndim - 2) + v.shape[-1:]))
               for k, v in out.items()}
    return out


def aggregate_stats(parts: Sequence[dict[str, dict[str, np.ndarray]]]) -> dict[str, dict[str, np.ndarray]]:
    """Episode statistics combined (lerobot's aggregate_stats): min of mins, max of maxes,
    count-weighted means, the pooled variance, and count-weighted quantiles (an estimate)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    for key in dict.fromkeys(k for p in parts for k in p):
        items = [p[key] for p in parts if key in p]
        counts = np.array([float(s["count"][0]) for s in items])
        w = counts / counts.sum()
        shape = (-1,) + (1,) * np.asarray(items[0]["mean"]).ndim
        mean = np.sum(np.stack([s["mean"] for s in items]) * w.reshape(shape), axis=0)
        var = np.sum(np.stack([s["std"] ** 2 + (s["mean"] - mean) ** 2 for s in items])
                     * w.reshape(shape), axis=0)
        with warnings.catch_warnings():  # (all-NaN: NaN)
            warnings.simplefilter("ignore", RuntimeWarning)
            lo = np.nanmin(np.stack([s["min"] for s in items]), axis=0)
            hi = np.nanmax(np.stack([s["max"] for s in items]), axis=0)
        agg = {"min": lo, "max": hi,
               "mean": mean, "std": np.sqrt(var), "count": np.array([int(counts.sum())])}
        for q in STAT_KEYS[5:]:
            if all(q in s for s in items):
                agg[q] = np.sum(np.stack([s[q] for s in items]) * w.reshape(shape), axis=0)
        out[key] = agg
    return out


def _stats_to_json(stats: dict[str, dict[str, np.ndarray]]) -> dict:
    def null_nan(x):  # NaN (no value) as null: stats.json stays strict JSON
        if isinstance(x, list):
            return [null_nan(v) for v in x]
        return None if isinstance(x, float) and math.isnan(x) else x

    return {k: {s: null_nan(np.asarray(v).tolist()) for s, v in st.items()} for k, st in stats.items()}


# ------------------------------------------------------------------------------------------
# Arrow columns
# ------------------------------------------------------------------------------------------


def _arrow_type(dtype: str, shape: Sequence[int]):
    """The column type of a feature: a scalar for shape (1,), else nested fixed-size lists
    (what the Hugging Face ``datasets`` Sequence/ArrayND features are stored as)."""
    import pyarrow as pa

    t = pa.from_numpy_dtype(np.dtype(dtype))
    if list(shape) == [1]:
        return t
    for d in reversed(list(shape)):
        t = pa.list_(t, int(d))
    return t


def _to_arrow(values: np.ndarray, dtype: str, shape: Sequence[int]):
    import pyarrow as pa

    x = np.ascontiguousarray(values, dtype=np.dtype(dtype))
    if list(shape) == [1]:
        return pa.array(x.reshape(-1))
    arr = pa.array(x.reshape(-1))
    for d in reversed(list(shape)):
        arr = pa.FixedSizeListArray.from_arrays(arr, int(d))
    return arr


def column_to_numpy(column, shape: Sequence[int], dtype: str, where: str) -> np.ndarray:
    """An Arrow column (scalars, or lists / fixed-size lists nested as deep as the shape) as
    an array (n, *shape), or (n,) for shape (1,); DatasetFormatError naming `where`."""
    import pyarrow as pa

    arr = column.combine_chunks() if hasattr(column, "combine_chunks") else column
    n = len(arr)
    while (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)
           or pa.types.is_fixed_size_list(arr.type)):
        arr = arr.flatten()
    values = arr.to_numpy(zero_copy_only=False)
    size = int(np.prod(shape))
    if values.size != n * size:
        raise DatasetFormatError(f"{where}: {values.size} values for {n} rows, but the feature's "
                                 f"shape {list(shape)} needs {n * size}")
    out = values.astype(np.dtype(dtype), copy=False)
    return out.reshape(n) if list(shape) == [1] else out.reshape((n, *shape))


def _tasks_table(tasks: Sequence[str]):
    """meta/tasks.parquet as lerobot writes it (a pandas DataFrame indexed by "task"): the
    columns task_index and task, with the pandas metadata that makes "task" the index."""
    import pyarrow as pa

    table = pa.table({"task_index": pa.array(range(len(tasks)), pa.int64()),
                      "task": pa.array(list(tasks), pa.string())})
    pandas_meta = {
        "index_columns": ["task"],
        "column_indexes": [{"name": None, "field_name": None, "pandas_type": "unicode",
                            "numpy_type": "object", "metadata": {"encoding": "UTF-8"}}],
        "columns": [
            {"name": "task_index", "field_name": "task_index", "pandas_type": "int64",
             "numpy_type": "int64", "metadata": None},
            {"name": "task", "field_name": "task", "pandas_type": "unicode",
             "numpy_type": "object", "metadata": None}],
        "creator": {"library": "pyarrow", "version": pa.__version__},
        "pandas_version": "2.2.3",
    }
    return table.replace_schema_metadata({b"pandas": json.dumps(pandas_meta).encode()})


# ------------------------------------------------------------------------------------------
# Writing
# ------------------------------------------------------------------------------------------


def _next_file(chunk: int, file: int, chunks_size: int) -> tuple[int, int]:
    return (chunk + 1, 0) if file == chunks_size - 1 else (chunk, file + 1)


def _silence_svt() -> None:
    # SVT-AV1 prints its whole configuration to stderr for every file unless told otherwise.
    os.environ.setdefault("SVT_LOG", "1")


class _VideoFile:
    """One open MP4 that episodes are appended to, frame times continuing across episodes."""

    def __init__(self, path: Path, fps: int, width: int, height: int, codec: str):
        import av

        _silence_svt()
        name, pix_fmt, options = CODECS[codec]
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path, self.fps, self.frames, self.bytes, self.last_dts = path, fps, 0, 0, None
        self.container = av.open(str(path), "w")
        self.stream = cast(Any, self.container.add_stream(name, rate=fps, options=dict(options)))
        self.stream.width, self.stream.height, self.stream.pix_fmt = width, height, pix_fmt
        self.stream.time_base = Fraction(1, fps)

    def append(self, frames: np.ndarray) -> tuple[float, float]:
        """Encode (n, H, W, 3) uint8 frames; their (from_timestamp, to_timestamp) in the file."""
        import av

        start = self.frames
        for image in frames:
            frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24")
            frame.pts, frame.time_base = self.frames, Fraction(1, self.fps)
            for packet in self.stream.encode(frame):
                self._mux(packet)
            self.frames += 1
        return start / self.fps, self.frames / self.fps

    def _mux(self, packet) -> None:
        # Packets come in decode order, each after the last: one that is not is an encoder
        # fault, and renumbering it would pair frames with the wrong rows. Said plainly here,
        # rather than as the muxer's EINVAL.
        if packet.dts is not None and self.last_dts is not None and packet.dts <= self.last_dts:
            raise RuntimeError(
                f"{self.path}: the {self.stream.codec_context.codec.name} encoder returned a "
                f"packet (frame {packet.pts}, decode time {packet.dts}) after decode time "
                f"{self.last_dts}; nothing was kept. Encode with another codec (--codec h264) "
                f"or another version of PyAV")
        self.last_dts = packet.dts if packet.dts is not None else self.last_dts
        self.bytes += packet.size
        self.container.mux(packet)

    def size_mb(self) -> float:
        """Encoded so far (the muxer's buffer may not have reached the file yet)."""
        return self.bytes / 2**20

    def close(self) -> dict:
        for packet in self.stream.encode():
            self._mux(packet)
        info = {"video.height": self.stream.height, "video.width": self.stream.width,
                # the codec, not the encoder ("av1", not "libsvtav1"): what lerobot reads with ffprobe
                "video.codec": self.stream.codec_context.codec.canonical_name,
                "video.pix_fmt": self.stream.pix_fmt, "video.is_depth_map": False,
                "video.fps": self.fps, "video.channels": 3, "has_audio": False}
        self.container.close()
        return info


def _check_features(features: dict[str, dict]) -> dict[str, dict]:
    out = {}
    for key, ft in features.items():
        if key in DEFAULT_FEATURES:
            raise ValueError(f"feature {key!r} is one of the columns every dataset has "
                             f"({sorted(DEFAULT_FEATURES)}); give the others only")
        if not isinstance(ft, dict) or "dtype" not in ft or "shape" not in ft:
            raise ValueError(f"feature {key!r}: expected {{'dtype', 'shape', 'names'}}, got {ft!r}")
        shape = [int(d) for d in ft["shape"]]
        if not shape or any(d < 1 for d in shape):
            raise ValueError(f"feature {key!r}: shape {ft['shape']!r} must be positive sizes")
        if ft["dtype"] == "video":
            if len(shape) != 3 or shape[2] != 3:
                raise ValueError(f"video feature {key!r}: shape {shape} must be (height, width, 3)")
        else:
            try:
                np.dtype(ft["dtype"])
            except TypeError as e:
                raise ValueError(f"feature {key!r}: dtype {ft['dtype']!r} is not a numpy dtype") from e
        out[key] = {"dtype": ft["dtype"], "shape": shape, "names": ft.get("names")}
    return out


class DatasetWriter:
    """Writes a LeRobotDataset v3 episode by episode (``add_episode``), then ``finalize()``.

    Used as a context manager, it finalizes on success and removes its partial output on an
    error. ``features``: name -> {"dtype", "shape", "names"}, "video" features given as uint8
    (n, H, W, 3) frames; the default columns (timestamp, indices) are added here."""

    def __init__(self, root: str | os.PathLike, fps: int, features: dict[str, dict],
                 robot_type: str | None = None, codec: str = "av1",
                 chunks_size: int = DEFAULT_CHUNK_SIZE,
                 data_files_size_in_mb: float = DEFAULT_DATA_FILE_SIZE_IN_MB,
                 video_files_size_in_mb: float = DEFAULT_VIDEO_FILE_SIZE_IN_MB):
        self.root = Path(root)
        if self.root.exists():
            raise FileExistsError(f"{self.root} already exists; choose a new dataset folder")
        if codec not in CODECS:
            raise ValueError(f"codec {codec!r} not in {sorted(CODECS)}")
        if int(fps) != fps or fps <= 0:
            raise ValueError(f"fps={fps!r} must be a positive integer (lerobot stores it as one)")
        self.fps, self.robot_type, self.codec = int(fps), robot_type, codec
        self.chunks_size = int(chunks_size)
        self.data_mb, self.video_mb = float(data_files_size_in_mb), float(video_files_size_in_mb)
        self.user_features = _check_features(features)
        self.features = {**self.user_features, **{k: dict(v) for k, v in DEFAULT_FEATURES.items()}}
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        self.tmp = self.root.parent / f".{self.root.name}.partial-{os.getpid()}"
        if self.tmp.exists():
            shutil.rmtree(self.tmp)
        self.tmp.mkdir(parents=True)
        self.tasks: dict[str, int] = {}
        self.episodes: list[dict] = []
        self.episode_stats: list[dict] = []
        self.total_frames = 0
        self._data_writer: Any = None
        self._data_file = (0, 0)
        self._data_file_frames = 0
        self._data_path = self.tmp
        self._videos: dict[str, _VideoFile] = {}
        self._video_file = {k: (0, 0) for k in self.video_keys}
        self._video_info: dict[str, dict] = {}
        self._closed = False

    # --- episodes ---
    def add_episode(self, frames: dict[str, np.ndarray], task: str | Sequence[str]) -> int:
        """Append one episode: every feature as an array (n, *shape); ``task`` one string for
        the whole episode or one per frame. Returns its episode_index."""
        if self._closed:
            raise RuntimeError(f"{self.root}: dataset already finalized")
        missing = sorted(set(self.user_features) - set(frames))
        extra = sorted(set(frames) - set(self.user_features))
        if missing or extra:
            raise ValueError(f"episode {len(self.episodes)}: features missing {missing}, "
                             f"unknown {extra} (declared: {sorted(self.user_features)})")
        lengths = {k: len(v) for k, v in frames.items()}
        n = next(iter(lengths.values()))
        if n < 1 or any(v != n for v in lengths.values()):
            raise ValueError(f"episode {len(self.episodes)}: frames per feature differ or are "
                             f"zero: {lengths}")
        arrays = {}
        for key, ft in self.user_features.items():
            x = np.asarray(frames[key])
            want = (n, *ft["shape"]) if ft["shape"] != [1] else None
            if want is not None and x.shape != want or want is None and x.reshape(n, -1).shape[1] != 1:
                raise ValueError(f"episode {len(self.episodes)}: feature {key!r} has shape "
                                 f"{x.shape}, expected {(n, *ft['shape'])}")
            if ft["dtype"] == "video" and x.dtype != np.uint8:
                raise ValueError(f"episode {len(self.episodes)}: video {key!r} must be uint8 RGB, "
                                 f"got {x.dtype}")
            arrays[key] = x
        per_frame = [task] * n if isinstance(task, str) else list(task)
        if len(per_frame) != n or not all(isinstance(t, str) and t for t in per_frame):
            raise ValueError(f"episode {len(self.episodes)}: task must be a non-empty string or "
                             f"{n} of them, got {task!r}")
        for t in per_frame:
            self.tasks.setdefault(t, len(self.tasks))
        index = len(self.episodes)
        first = self.total_frames
        arrays["timestamp"] = (np.arange(n) / self.fps).astype(np.float32)
        arrays["frame_index"] = np.arange(n, dtype=np.int64)
        arrays["episode_index"] = np.full(n, index, np.int64)
        arrays["index"] = np.arange(first, first + n, dtype=np.int64)
        arrays["task_index"] = np.array([self.tasks[t] for t in per_frame], np.int64)
        row: dict[str, Any] = {"episode_index": index, "tasks": list(dict.fromkeys(per_frame)),
                               "length": n}
        row.update(self._write_data(arrays, n))
        row.update(dataset_from_index=first, dataset_to_index=first + n)
        for key in self.video_keys:
            row.update(self._write_video(key, arrays[key]))
        stats = {}
        for key, ft in self.features.items():
            if ft["dtype"] == "video":
                pick = np.unique(np.linspace(0, n - 1, min(n, VIDEO_STATS_FRAMES)).round().astype(int))
                stats[key] = feature_stats(arrays[key][pick], video=True)
            else:
                stats[key] = feature_stats(arrays[key])
        for key, st in stats.items():
            for name, value in st.items():
                row[f"stats/{key}/{name}"] = np.asarray(value)
        row["meta/episodes/chunk_index"], row["meta/episodes/file_index"] = 0, 0
        self.episodes.append(row)
        self.episode_stats.append(stats)
        self.total_frames += n
        return index

    def _write_data(self, arrays: dict[str, np.ndarray], n: int) -> dict:
        import pyarrow as pa
        import pyarrow.parquet as pq

        cols = {k: _to_arrow(arrays[k], f["dtype"], f["shape"])
                for k, f in self.features.items() if f["dtype"] != "video"}
        table = pa.table(cols)
        if self._data_writer is not None and self._data_file_frames:
            # lerobot's rule: roll over when this episode, at the file's bytes per frame so
            # far, would take the file past the limit (each write_table lands in the file).
            size = self._data_path.stat().st_size
            if (size + size / self._data_file_frames * n) / 2**20 >= self.data_mb:
                self._data_writer.close()
                self._data_writer = None
                self._data_file = _next_file(*self._data_file, self.chunks_size)
                self._data_file_frames = 0
        chunk, file = self._data_file
        if self._data_writer is None:
            self._data_path = self.tmp / DATA_PATH.format(chunk_index=chunk, file_index=file)
            self._data_path.parent.mkdir(parents=True, exist_ok=True)
            self._data_writer = pq.ParquetWriter(self._data_path, table.schema, compression="zstd")
        self._data_writer.write_table(table)
        self._data_file_frames += n
        return {"data/chunk_index": chunk, "data/file_index": file}

    def _write_video(self, key: str, frames: np.ndarray) -> dict:
        video = self._videos.get(key)
        if video is not None and video.frames and video.size_mb() >= self.video_mb:
            self._video_info[key] = video.close()
            self._video_file[key] = _next_file(*self._video_file[key], self.chunks_size)
            video = None
        chunk, file = self._video_file[key]
        if video is None:
            h, w = frames.shape[1:3]
            video = self._videos[key] = _VideoFile(
                self.tmp / VIDEO_PATH.format(video_key=key, chunk_index=chunk, file_index=file),
                self.fps, w, h, self.codec)
        start, end = video.append(frames)
        return {f"videos/{key}/chunk_index": chunk, f"videos/{key}/file_index": file,
                f"videos/{key}/from_timestamp": start, f"videos/{key}/to_timestamp": end}

    # --- the end ---
    def finalize(self) -> Path:
        """Close the files, write meta/ and move the dataset into place at ``root``."""
        import pyarrow as pa
        import pyarrow.parquet as pq

        from embodied_stack.models.files import atomic_write_json

        if self._closed:
            raise RuntimeError(f"{self.root}: dataset already finalized")
        if not self.episodes:
            raise ValueError(f"{self.root}: no episodes to write")
        self._closed = True
        if self._data_writer is not None:
            self._data_writer.close()
        for key, video in self._videos.items():
            info = video.close()
            self._video_info.setdefault(key, info)
        (self.tmp / "meta").mkdir(parents=True, exist_ok=True)
        pq.write_table(_tasks_table(list(self.tasks)), self.tmp / TASKS_PATH)
        columns: dict[str, Any] = {}
        for key in self.episodes[0]:
            values = [row[key] for row in self.episodes]
            if key == "tasks":
                columns[key] = pa.array(values, pa.list_(pa.string()))
            elif isinstance(values[0], np.ndarray):
                columns[key] = pa.array([v.reshape(-1).tolist() for v in values],
                                        pa.list_(pa.from_numpy_dtype(values[0].dtype)))
            elif isinstance(values[0], float):
                columns[key] = pa.array(values, pa.float64())
            else:
                columns[key] = pa.array(values, pa.int64())
        path = self.tmp / EPISODES_PATH.format(chunk_index=0, file_index=0)
        path.parent.mkdir(parents=True, exist_ok=True)
        pq.write_table(pa.table(columns), path)
        atomic_write_json(self.tmp / STATS_PATH, _stats_to_json(aggregate_stats(self.episode_stats)))
        features = {}
        for key, ft in self.features.items():
            ft = dict(ft)
            if ft["dtype"] == "video":
                ft["names"] = ft["names"] or ["height", "width", "channels"]
                ft["info"] = self._video_info[key]
            else:
                ft["fps"] = self.fps
            features[key] = ft
        info = {
            "codebase_version": CODEBASE_VERSION, "robot_type": self.robot_type,
            "total_episodes": len(self.episodes), "total_frames": self.total_frames,
            "total_tasks": len(self.tasks), "chunks_size": self.chunks_size,
            "data_files_size_in_mb": self.data_mb, "video_files_size_in_mb": self.video_mb,
            "fps": self.fps, "splits": {"train": f"0:{len(self.episodes)}"},
            "data_path": DATA_PATH, "video_path": VIDEO_PATH if self.video_keys else None,
            "features": features,
        }
        atomic_write_json(self.tmp / INFO_PATH, info)
        if self.root.exists():
            raise FileExistsError(f"{self.root} appeared while writing; the dataset is left in "
                                  f"{self.tmp}")
        os.replace(self.tmp, self.root)
        return self.root

    def abort(self) -> None:
        """Drop everything written so far (nothing appears at ``root``)."""
        self._closed = True
        if self._data_writer is not None:
            self._data_writer.close()
        for video in self._videos.values():
            try:
                video.container.close()
            except Exception:  # noqa: BLE001 (already broken: it is being thrown away)
                pass
        shutil.rmtree(self.tmp, ignore_errors=True)

    def __enter__(self) -> DatasetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.finalize()
        else:
            self.abort()


def write_dataset(root: str | os.PathLike, episodes: Iterable[tuple[dict[str, np.ndarray], str]],
                  fps: int, features: dict[str, dict], total: int | None = None,
                  progress: bool = True, **kwargs) -> Path:
    """Write (frames, task) episodes as a dataset at ``root``, with a progress bar."""
    from tqdm import tqdm

    with DatasetWriter(root, fps, features, **kwargs) as writer:
        for frames, task in tqdm(episodes, total=total, desc=f"writing {Path(root).name}",
                                 unit="episode", disable=not progress):
            writer.add_episode(frames, task)
    return Path(root)


# ------------------------------------------------------------------------------------------
# Reading
# ------------------------------------------------------------------------------------------


@dataclass
class Episode:
    """One episode as arrays: every feature (n, *shape) (videos decoded to uint8 (n, H, W, 3),
    shape-(1,) features as (n,)), and its tasks, one string per frame."""

    index: int
    frames: dict[str, np.ndarray]
    tasks: list[str]

    def __len__(self) -> int:
        return len(self.frames["frame_index"])


class LeRobotDataset:
    """A LeRobotDataset v3 on disk: ``info``, ``features``, ``fps``, ``stats``, ``tasks``
    (by task_index), ``episodes`` (the episode table's rows), and ``episode(i)``."""

    def __init__(self, root: str | os.PathLike):
        from embodied_stack.models.files import read_json

        self.root = Path(root)
        info_path = self.root / INFO_PATH
        if not info_path.is_file():
            raise FileNotFoundError(f"{self.root}: no {INFO_PATH}; not a LeRobotDataset v3 folder")
        self.info = read_json(info_path, "a LeRobotDataset info.json")
        version = self.info.get("codebase_version") if isinstance(self.info, dict) else None
        if version != CODEBASE_VERSION:
            raise DatasetFormatError(f"{info_path}: codebase_version {version!r}; this reader "
                                     f"reads {CODEBASE_VERSION!r} (convert older datasets with "
                                     "lerobot's convert_dataset_v21_to_v30)")
        for field in ("fps", "features", "data_path", "total_episodes", "total_frames"):
            if field not in self.info:
                raise DatasetFormatError(f"{info_path}: missing field {field!r}")
        self.fps = self.info["fps"]
        self.features: dict[str, dict] = self.info["features"]
        for key, ft in self.features.items():
            if not isinstance(ft, dict) or "dtype" not in ft or "shape" not in ft:
                raise DatasetFormatError(f"{info_path}: features.{key} needs dtype and shape, "
                                         f"got {ft!r}")
        missing = sorted(set(DEFAULT_FEATURES) - set(self.features))
        if missing:
            raise DatasetFormatError(f"{info_path}: features lack the default columns {missing}")
        self.video_keys = [k for k, f in self.features.items() if f["dtype"] == "video"]
        if self.video_keys and not self.info.get("video_path"):
            raise DatasetFormatError(f"{info_path}: video features {self.video_keys} but no video_path")
        stats_path = self.root / STATS_PATH
        raw = read_json(stats_path, "a LeRobotDataset stats.json") if stats_path.is_file() else {}
        self.stats = {k: {s: np.asarray(v, np.float64) for s, v in st.items()} for k, st in raw.items()}
        self.tasks = self._read_tasks()
        self.episodes = self._read_episodes()
        self._tables: dict[Path, Any] = {}

    @property
    def num_episodes(self) -> int:
        return len(self.episodes)

    @property
    def num_frames(self) -> int:
        return int(self.info["total_frames"])

    def _read_tasks(self) -> list[str]:
        import pyarrow.parquet as pq

        path = self.root / TASKS_PATH
        if not path.is_file():
            raise DatasetFormatError(f"{self.root}: missing {TASKS_PATH}")
        table = pq.read_table(path)
        names = table.column_names
        task_col = "task" if "task" in names else "__index_level_0__" if "__index_level_0__" in names else None
        if task_col is None or "task_index" not in names:
            raise DatasetFormatError(f"{path}: expected columns task_index and task (the index), "
                                     f"found {names}")
        tasks = table.column(task_col).to_pylist()
        order = table.column("task_index").to_pylist()
        if sorted(order) != list(range(len(order))):
            raise DatasetFormatError(f"{path}: task_index must number the tasks 0..{len(order) - 1}, "
                                     f"got {order}")
        out = [""] * len(order)
        for i, t in zip(order, tasks):
            out[i] = t
        return out

    def _read_episodes(self) -> list[dict]:
        import pyarrow.parquet as pq

        files = sorted((self.root / "meta" / "episodes").glob("chunk-*/file-*.parquet"))
        if not files:
            raise DatasetFormatError(f"{self.root}: no meta/episodes/chunk-*/file-*.parquet")
        rows: list[dict] = []
        need = ["episode_index", "length", "data/chunk_index", "data/file_index",
                "dataset_from_index", "dataset_to_index"]
        for key in self.video_keys:
            need += [f"videos/{key}/{c}" for c in ("chunk_index", "file_index", "from_timestamp",
                                                   "to_timestamp")]
        for path in files:
            table = pq.read_table(path)
            absent = [c for c in need if c not in table.column_names]
            if absent:
                raise DatasetFormatError(f"{path}: episode table lacks columns {absent}")
            rows += table.select([c for c in table.column_names
                                  if not c.startswith("stats/")]).to_pylist()
        rows.sort(key=lambda r: r["episode_index"])
        if [r["episode_index"] for r in rows] != list(range(len(rows))):
            raise DatasetFormatError(f"{self.root / 'meta/episodes'}: episode_index must run "
                                     f"0..{len(rows) - 1} without gaps")
        if len(rows) != self.info["total_episodes"]:
            raise DatasetFormatError(f"{self.root / INFO_PATH}: total_episodes "
                                     f"{self.info['total_episodes']}, but the episode table has {len(rows)}")
        return rows

    def _data_table(self, path: Path):
        import pyarrow.parquet as pq

        if path not in self._tables:
            if not path.is_file():
                raise DatasetFormatError(f"{path}: data file named by the episode table is missing")
            self._tables = {path: pq.read_table(path)}  # one file at a time in memory
        return self._tables[path]

    def episode(self, index: int) -> Episode:
        """Episode `index` with every feature, videos decoded."""
        import pyarrow.compute as pc

        if not 0 <= index < len(self.episodes):
            raise IndexError(f"episode {index} not in 0..{len(self.episodes) - 1}")
        row = self.episodes[index]
        path = self.root / self.info["data_path"].format(chunk_index=row["data/chunk_index"],
                                                         file_index=row["data/file_index"])
        table = self._data_table(path)
        if "episode_index" not in table.column_names:
            raise DatasetFormatError(f"{path}: no episode_index column")
        rows = table.filter(pc.equal(table.column("episode_index"), index))
        n = int(row["length"])
        if rows.num_rows != n:
            raise DatasetFormatError(f"{path}: episode {index} has {rows.num_rows} rows, the episode "
                                     f"table says length {n}")
        frames: dict[str, np.ndarray] = {}
        for key, ft in self.features.items():
            if ft["dtype"] == "video":
                continue
            if key not in rows.column_names:
                raise DatasetFormatError(f"{path}: feature {key!r} of info.json has no column")
            frames[key] = column_to_numpy(rows.column(key), ft["shape"], ft["dtype"],
                                          f"{path}: column {key!r}")
        first = int(row["dataset_from_index"])
        if not np.array_equal(frames["index"], np.arange(first, first + n)):
            raise DatasetFormatError(f"{path}: episode {index}'s index column is not "
                                     f"{first}..{first + n - 1} (dataset_from/to_index)")
        for key in self.video_keys:
            frames[key] = self._decode(key, row, frames["timestamp"])
        bad = [int(t) for t in np.unique(frames["task_index"]) if not 0 <= t < len(self.tasks)]
        if bad:
            raise DatasetFormatError(f"{path}: episode {index} names task_index {bad}, not in "
                                     f"{self.root / TASKS_PATH}")
        return Episode(index, frames, [self.tasks[int(t)] for t in frames["task_index"]])

    def __iter__(self):
        for i in range(len(self.episodes)):
            yield self.episode(i)

    def _decode(self, key: str, row: dict, timestamps: np.ndarray) -> np.ndarray:
        """An episode's frames of video `key`: the frames at from_timestamp + timestamp."""
        import av

        path = self.root / self.info["video_path"].format(
            video_key=key, chunk_index=row[f"videos/{key}/chunk_index"],
            file_index=row[f"videos/{key}/file_index"])
        if not path.is_file():
            raise DatasetFormatError(f"{path}: video file named by the episode table is missing")
        start = float(row[f"videos/{key}/from_timestamp"])
        want = start + timestamps.astype(np.float64)
        got: dict[int, np.ndarray] = {}
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            tb = stream.time_base
            container.seek(max(0, int(math.floor((start - 0.5) / tb))), stream=stream,
                           backward=True, any_frame=False)
            for frame in container.decode(stream):
                t = float(frame.pts * tb)
                if t > want[-1] + TIMESTAMP_TOLERANCE_S:
                    break
                k = int(np.argmin(np.abs(want - t)))
                if abs(want[k] - t) <= TIMESTAMP_TOLERANCE_S:
                    got[k] = frame.to_ndarray(format="rgb24")
        if len(got) != len(want):
            lost = [round(float(want[i]), 4) for i in range(len(want)) if i not in got][:5]
            raise DatasetFormatError(f"{path}: episode {row['episode_index']} has no frame at "
                                     f"t = {lost} s (from_timestamp {start} + timestamp); "
                                     f"{len(got)} of {len(want)} found")
        return np.stack([got[i] for i in range(len(want))])
