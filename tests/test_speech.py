"""The spoken-keyword data set made on the machine (edgekit/speech.py): deterministic, split by voice, the usual
49x10 MFCC front end, clear errors."""
import hashlib

import numpy as np
import pytest

from edgekit import speech
from edgekit.errors import DataError, UsageError


def _digest(d: speech.KwsData) -> str:
    h = hashlib.sha256()
    for split in ("train", "val", "test"):
        x, y = d.split(split)
        h.update(x.tobytes())
        h.update(y.tobytes())
    return h.hexdigest()


def test_same_seed_same_bytes_other_seed_other_data():
    a = speech.generate(0, "small", workers=2)
    b = speech.generate(0, "small", workers=1)
    assert _digest(a) == _digest(b)
    assert _digest(speech.generate(1, "small", workers=2)) != _digest(a)


def test_splits_are_by_voice_and_cover_every_class():
    d = speech.kws(0, "small")
    variants = {s: {v.split("+")[1] for v in getattr(d, f"speakers_{s}")} for s in ("train", "val", "test")}
    assert not (variants["train"] & variants["test"]) and not (variants["train"] & variants["val"])
    assert not (variants["val"] & variants["test"])
    for split in ("train", "val", "test"):
        x, y = d.split(split)
        assert x.shape[1:] == speech.FEATURE_SHAPE == (49, 10) and x.dtype == np.float32
        assert set(np.unique(y)) == set(range(len(speech.CLASSES)))
        assert np.isfinite(x).all()


def test_front_end_on_a_tone():
    t = np.arange(speech.CLIP_SAMPLES) / speech.SAMPLE_RATE
    low, high = np.sin(2 * np.pi * 300 * t), np.sin(2 * np.pi * 3000 * t)
    m = speech.mfcc(np.stack([low, high, np.zeros_like(t)]))
    assert m.shape == (3, 49, 10)
    assert np.allclose(m[0], m[0, 0], atol=1e-6 * np.abs(m[0]).max())  # a steady tone: every frame alike
    assert m[0, 0, 0] > m[2, 0, 0] + 10  # c0 (log energy) far above silence
    assert not np.allclose(m[0, 0, 1:], m[1, 0, 1:], atol=1.0)  # spectral shape differs between the tones
    with pytest.raises(DataError, match="1 s at 16 kHz"):
        speech.mfcc(np.zeros((2, 8000)))


def test_missing_espeak_is_one_clear_error(monkeypatch):
    monkeypatch.setattr(speech.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="make setup"):
        speech.generate(0, "small")
    with pytest.raises(UsageError, match="full, small"):
        speech.kws(0, "huge")


def test_cli_summarises_and_writes(tmp_path):
    from edgekit.cli import main

    out = tmp_path / "kws.npz"
    assert main(["data", "kws", "--size", "small", "-o", str(out)]) == 0
    with np.load(out) as z:
        assert z["x_test"].shape[1:] == (49, 10) and list(z["classes"][:2]) == ["silence", "unknown"]
    assert main(["data", "imagenet"]) != 0
