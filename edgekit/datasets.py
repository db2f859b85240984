"""The small datasets edgekit's bundled examples are trained and tested on.

Examples in :mod:`edgekit.zoo` carry their data so that calibration (quantization), test accuracy and fine-tuning
(pruning, spiking conversion) work straight from the CLI without the user supplying files. The only dataset is
scikit-learn's bundled ``load_digits`` (1,797 8x8 grey-scale digits, pixel values 0..16), so nothing is downloaded.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from edgekit.errors import ShapeError

DIGITS_TEST_FRACTION = 0.2


@dataclass(frozen=True)
class DigitsData:
    """A fixed stratified train/test split of the digits.

    Images are float32 in [0, 1] shaped [N, 1, 8, 8] (NCHW); labels are int64 class indices 0..9.
    """

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray

    def __post_init__(self):
        for x, y, split in ((self.x_train, self.y_train, "train"), (self.x_test, self.y_test, "test")):
            if x.shape[1:] != (1, 8, 8) or x.dtype != np.float32:
                raise ShapeError(f"digits {split} images must be float32 [N, 1, 8, 8], got {x.dtype} {x.shape}")
            if y.shape != (x.shape[0],) or y.dtype != np.int64:
                raise ShapeError(f"digits {split} labels must be int64 [{x.shape[0]}], got {y.dtype} {y.shape}")


def digits(split_seed: int = 0) -> DigitsData:
    """scikit-learn's digits, scaled to [0, 1], split 80/20 stratified by class with ``split_seed``.

    The split is deterministic: the same seed gives the same train and test images on every machine, so the
    accuracies quoted for the bundled examples are reproducible. Each call returns fresh (writable) arrays.
    """
    return DigitsData(*(a.copy() for a in _digits_split(split_seed)))


def _cache_file(split_seed: int):
    import os
    from pathlib import Path

    root = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "edgekit"
    return root / f"digits-split{split_seed}.npz"


@lru_cache(maxsize=4)
def _digits_split(split_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    # Importing scikit-learn costs seconds; the split it makes is kept in a cache file after the first time.
    cache = _cache_file(split_seed)
    try:
        with np.load(cache) as z:
            arrays = tuple(np.ascontiguousarray(z[k]) for k in ("x_train", "y_train", "x_test", "y_test"))
        for a in arrays:
            a.setflags(write=False)
        return arrays
    except (OSError, KeyError, ValueError):
        pass
    arrays = _split_with_sklearn(split_seed)
    try:
        import os

        cache.parent.mkdir(parents=True, exist_ok=True)
        tmp = cache.with_suffix(f".{os.getpid()}.tmp.npz")
        np.savez(tmp, **dict(zip(("x_train", "y_train", "x_test", "y_test"), arrays)))
        os.replace(tmp, cache)
    except OSError:
        pass  # no writable cache: still correct, only slower next time
    return arrays


def _split_with_sklearn(split_seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    bunch = load_digits()
    images = (bunch.images.astype(np.float32) / 16.0).reshape(-1, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    x_train, x_test, y_train, y_test = train_test_split(
        images, labels, test_size=DIGITS_TEST_FRACTION, stratify=labels, random_state=split_seed)
    arrays = tuple(np.ascontiguousarray(a) for a in (x_train, y_train, x_test, y_test))
    for a in arrays:
        a.setflags(write=False)  # cached: callers get copies
    return arrays


def as_sequence(x: np.ndarray) -> np.ndarray:
    """Images [N, 1, 8, 8] -> pixel sequence [N, 64, 1], one pixel per time step in row-major order."""
    x = np.asarray(x)
    if x.ndim != 4 or x.shape[1] != 1:
        raise ShapeError(f"as_sequence expects single-channel images [N, 1, H, W], got shape {x.shape}")
    return np.ascontiguousarray(x.reshape(x.shape[0], -1, 1))
