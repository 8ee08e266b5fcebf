"""Calibration and evaluation data: a samples file, captured live requests, or random data.

A sample set is a list of feeds (input name → array in the graph's shape), each a batch of one
or more rows for a batching model, one sample otherwise. Every array is checked against the
model's inputs (name, dtype, rank and fixed dims) before anything uses it.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from server.optimize.failure import OptimizeError
from server.optimize.source import SourceVersion, TensorInfo
from server.service.sample_capture import CAPTURE_SUFFIX

Feeds = dict[str, np.ndarray]
RANDOM_WARNING = "accuracy figures on random data prove little: give --samples FILE.npz or a directory of captured requests"
# At most this many captured request files are read (the capture itself is bounded too).
MAX_CAPTURED_FILES = 4096


@dataclass
class Samples:
    feeds: list[Feeds]
    batching: bool
    source: str  # "file", "captured" or "random"
    path: str | None = None
    warnings: list[str] = field(default_factory=list)

    @property
    def count(self) -> int:
        """Samples: rows of every feed for a batching model, else feeds."""
        return sum(_rows(feeds) for feeds in self.feeds) if self.batching else len(self.feeds)


@dataclass(frozen=True, slots=True)
class RandomSpec:
    count: int
    low: float
    high: float
    shapes: dict[str, tuple[int, ...]]  # dims after the batch dim (the whole shape without batching)
    seed: int = 0


def load_samples(source: SourceVersion, path: Path | None, random: RandomSpec) -> Samples:
    """From ``path`` (an .npz file, or a directory of captured requests), else random data.

    Raises OptimizeError naming the array, the input and both shapes for data that does not fit.
    """
    for tensor in source.inputs:
        if tensor.dtype is None or tensor.dtype == np.dtype(object):
            raise OptimizeError(f"input '{tensor.name}' of model '{source.name}' is {tensor.wire}: optimize handles numeric inputs only")
    if path is None:
        return random_samples(source, random)
    if path.is_dir():
        return captured_samples(source, path)
    if not path.is_file():
        raise OptimizeError(f"--samples '{path}': no such file or directory")
    return file_samples(source, path)


def file_samples(source: SourceVersion, path: Path) -> Samples:
    """Arrays named after the inputs, first dim = samples; each sample becomes one feed."""
    arrays = _read_npz(path)
    where = f"samples file {path}"
    counts = set()
    for tensor in source.inputs:
        array = _array_for(arrays, tensor, source, where)
        _check_array(array, tensor, source, where, samples_dim=True)
        counts.add(array.shape[0])
    if len(counts) != 1:
        raise OptimizeError(f"{where}: the arrays hold different numbers of samples ({sorted(counts)}); the first dim counts samples")
    total = counts.pop()
    if total == 0:
        raise OptimizeError(f"{where}: the arrays hold no samples")
    feeds = [{t.name: _sample(arrays[t.name], index, source.batching) for t in source.inputs} for index in range(total)]
    return Samples(feeds, source.batching, "file", str(path))


def captured_samples(source: SourceVersion, directory: Path) -> Samples:
    """One feed per captured request file (``--sample-capture-dir`` writes them)."""
    files = sorted(directory.glob(f"*{CAPTURE_SUFFIX}"))[:MAX_CAPTURED_FILES]
    if not files:
        raise OptimizeError(f"--samples '{directory}': no captured requests (*{CAPTURE_SUFFIX} files) in that directory")
    feeds = []
    for path in files:
        arrays = _read_npz(path)
        where = f"captured request {path}"
        for tensor in source.inputs:
            _check_array(_array_for(arrays, tensor, source, where), tensor, source, where, samples_dim=False)
        feeds.append({t.name: arrays[t.name] for t in source.inputs})
    return Samples(feeds, source.batching, "captured", str(directory))


def random_samples(source: SourceVersion, spec: RandomSpec) -> Samples:
    """Uniform data in [low, high] (integers: low..high), one feed per sample."""
    rng = np.random.default_rng(spec.seed)
    shapes = {tensor.name: _random_shape(tensor, source, spec) for tensor in source.inputs}
    feeds = [{t.name: _random_array(rng, t, shapes[t.name], spec) for t in source.inputs} for _ in range(spec.count)]
    return Samples(feeds, source.batching, "random", None, [RANDOM_WARNING])


def split(samples: Samples) -> tuple[list[Feeds], list[Feeds]]:
    """(calibration, evaluation): the first half calibrates, the rest evaluates; one feed does both."""
    if len(samples.feeds) < 2:
        return samples.feeds, samples.feeds
    half = (len(samples.feeds) + 1) // 2
    return samples.feeds[:half], samples.feeds[half:]


def grouped(feeds: list[Feeds], batching: bool, max_rows: int) -> list[Feeds]:
    """Consecutive feeds of the same shapes joined into batches of up to ``max_rows`` rows:
    fewer, larger runs for calibration and evaluation, with the same rows in the same order."""
    if not batching:
        return feeds
    batches: list[Feeds] = []
    pending: list[Feeds] = []
    for feed in feeds:
        if pending and (_shape_key(feed) != _shape_key(pending[0]) or sum(map(_rows, pending)) + _rows(feed) > max_rows):
            batches.append(_concatenate(pending))
            pending = []
        pending.append(feed)
    if pending:
        batches.append(_concatenate(pending))
    return batches


def batch_of(feeds: list[Feeds], rows: int, batching: bool) -> Feeds:
    """``rows`` rows of the first feed's shapes, cycling through the feeds that share them (for
    timing); a model that does not batch gets its first sample."""
    if not batching:
        return feeds[0]
    key = _shape_key(feeds[0])
    matching = [feed for feed in feeds if _shape_key(feed) == key]
    names = list(feeds[0])
    pool = {name: np.concatenate([feed[name] for feed in matching]) for name in names}
    available = _rows(pool)
    index = np.arange(rows) % available
    return {name: np.ascontiguousarray(pool[name][index]) for name in names}


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return {name: archive[name] for name in archive.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as error:
        raise OptimizeError(f"cannot read '{path}' as an .npz file: {error}") from None


def _array_for(arrays: dict[str, np.ndarray], tensor: TensorInfo, source: SourceVersion, where: str) -> np.ndarray:
    names = {t.name for t in source.inputs}
    unknown = sorted(set(arrays) - names)
    if unknown:
        raise OptimizeError(f"{where}: array '{unknown[0]}' is not an input of model '{source.name}' (inputs: {', '.join(sorted(names))})")
    if tensor.name not in arrays:
        raise OptimizeError(f"{where}: no array for input '{tensor.name}' of model '{source.name}' (arrays: {', '.join(sorted(arrays))})")
    return arrays[tensor.name]


def _check_array(array: np.ndarray, tensor: TensorInfo, source: SourceVersion, where: str, samples_dim: bool) -> None:
    """``samples_dim``: the array has a leading dim that counts samples (a samples file), which
    stands in for a batching model's batch dim; otherwise the array is one feed as the graph takes it."""
    wanted, shown = list(tensor.dims), _shown_dims(tensor, source.batching)
    if samples_dim:
        skip = 1 if source.batching else 0
        wanted, shown = [None, *wanted[skip:]], ["N", *shown[skip:]]
    if array.dtype != tensor.dtype:
        raise OptimizeError(
            f"{where}: array '{tensor.name}' is {array.dtype}, "
            f"input '{tensor.name}' of model '{source.name}' is {tensor.dtype} ({tensor.wire})"
        )
    if array.ndim != len(wanted) or any(w is not None and w != a for w, a in zip(wanted, array.shape)):
        raise OptimizeError(
            f"{where}: array '{tensor.name}' has shape {list(array.shape)}, "
            f"input '{tensor.name}' of model '{source.name}' needs [{','.join(map(str, shown))}] (-1: any size)"
        )


def _shown_dims(tensor: TensorInfo, batching: bool) -> list[object]:
    dims: list[object] = [-1 if d is None else d for d in tensor.dims]
    if batching and dims:
        dims[0] = "batch"
    return dims


def _sample(array: np.ndarray, index: int, batching: bool) -> np.ndarray:
    return array[index : index + 1] if batching else array[index]


def _random_shape(tensor: TensorInfo, source: SourceVersion, spec: RandomSpec) -> tuple[int, ...]:
    dims: tuple[int | None, ...] = tensor.dims[1:] if source.batching else tensor.dims
    if tensor.name in spec.shapes:
        given = spec.shapes[tensor.name]
        if len(given) != len(dims) or any(d is not None and d != g for d, g in zip(dims, given)):
            raise OptimizeError(
                f"--shape {tensor.name}: {list(given)} does not fit the input's dims {_shown_dims(tensor, source.batching)}"
            )
        dims = given
    if any(d is None for d in dims):
        shown = ",".join("-1" if d is None else str(d) for d in dims)
        raise OptimizeError(
            f"input '{tensor.name}' has dynamic dims [{shown}] that random calibration data cannot cover: "
            f"give --shape {tensor.name}:{shown.replace('-1', 'N')} with sizes for them, or --samples"
        )
    return ((1,) if source.batching else ()) + tuple(d for d in dims if d is not None)


def _random_array(rng: np.random.Generator, tensor: TensorInfo, shape: tuple[int, ...], spec: RandomSpec) -> np.ndarray:
    dtype = tensor.dtype
    assert dtype is not None
    if dtype == np.bool_:
        return rng.integers(0, 2, shape).astype(np.bool_)
    if np.issubdtype(dtype, np.integer):
        return rng.integers(int(spec.low), int(spec.high), shape, endpoint=True).astype(dtype)
    return rng.uniform(spec.low, spec.high, shape).astype(dtype)


def _rows(feeds: Feeds) -> int:
    first = next(iter(feeds.values()))
    return int(first.shape[0]) if first.ndim else 1


def _shape_key(feeds: Feeds) -> tuple[tuple[int, ...], ...]:
    return tuple(array.shape[1:] for array in feeds.values())


def _concatenate(feeds: list[Feeds]) -> Feeds:
    return {name: np.concatenate([feed[name] for feed in feeds]) for name in feeds[0]}
