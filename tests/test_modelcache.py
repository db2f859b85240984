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


def test_cached_estimate_never_imports_torch(tmp_path):
    """`edgekit estimate` on a cached graph starts without torch (the ~1.5 s that kept it from answering in 1 s)."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "XDG_CACHE_HOME": str(tmp_path)}
    code = ("import sys; from edgekit import api; api.estimate('digits-cnn', 'cortex-m7', quantize='int8'); "
            "print('torch' in sys.modules)")
    first = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    again = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert first.stdout.split()[-1] == "True"   # the first load builds and traces the example
    assert again.stdout.split()[-1] == "False"


def test_converter_entries_stay_functions_after_submodule_imports():
    import importlib

    import edgekit.converters as conv

    importlib.import_module("edgekit.converters.prune")
    importlib.import_module("edgekit.converters.quantize")
    from edgekit.converters import prune, quantize, to_spiking

    assert callable(prune) and callable(quantize) and callable(to_spiking)
    assert prune.__module__ == "edgekit.converters.prune" and conv.quantize is quantize
