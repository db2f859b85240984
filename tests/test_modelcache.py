"""The graph cache behind `edgekit estimate`: same estimate from the cache as from a full load, never stale, never
trusted when corrupt."""
import numpy as np

from edgekit import api, modelcache


def test_estimate_from_cache_equals_full_load(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert modelcache.load("digits-cnn") is None
    first, fits1, _ = api.estimate("digits-cnn", "cortex-m7", quantize="int8")   # full load, stores the graph
    cached = modelcache.load("digits-cnn")
    assert cached is not None and cached.module is None
    assert cached.input_shapes == [(1, 1, 8, 8)]
    second, fits2, _ = api.estimate("digits-cnn", "cortex-m7", quantize="int8")  # from the cache
    assert first.to_json() == second.to_json() and fits1 == fits2


def test_corrupt_entry_is_ignored_and_rewritten(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    entry = modelcache.cache_dir() / f"{modelcache.key('digits-cnn')}.pkl"
    entry.parent.mkdir(parents=True)
    entry.write_bytes(b"not a pickle")
    assert modelcache.load("digits-cnn") is None
    est, _, _ = api.estimate("digits-cnn", "cortex-m7", quantize="int8")
    assert est.flash_bytes > 0 and modelcache.load("digits-cnn") is not None


def test_key_follows_file_contents(tmp_path):
    f = tmp_path / "m.onnx"
    f.write_bytes(b"one")
    k1 = modelcache.key(f)
    f.write_bytes(b"two")
    assert modelcache.key(f) != k1
    assert modelcache.key(f, (1, 8)) != modelcache.key(f)
    assert modelcache.key(tmp_path / "missing.pt2") is None  # the full loader reports what is wrong
    assert modelcache.key(np.zeros(3)) is None
