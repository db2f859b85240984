"""edgekit: take a trained neural network and make it run on microcontrollers, phones and neuromorphic chips.

    import edgekit
    model = edgekit.Model.load("digits-cnn")              # or Model.from_module(module, example_input)
    art = edgekit.compile(model, target="cortex-m7", out="build/cnn", quantize="int8")
    art = edgekit.profile(art.path)                       # runs it on the emulated board
    print(art.measured["accuracy"], art.measured["instructions"])
"""
__version__ = "0.1.0"

from edgekit.errors import EdgekitError  # noqa: E402
from edgekit.model import Model  # noqa: E402


def __getattr__(name):
    # The API pulls in torch/TVM-heavy modules; import it on first use so `edgekit --help` stays quick.
    if name in ("compile", "profile", "estimate", "render", "Artifact", "staged_output"):
        from edgekit import api

        return getattr(api, name)
    if name == "CompileOptions":
        from edgekit.targets import CompileOptions

        return CompileOptions
    if name in ("sweep",):
        # importlib, not `from edgekit import sweep`: that would come back here. Importing the submodule makes
        # `edgekit.sweep` the module, which is callable (edgekit/sweep.py), so edgekit.sweep(...) runs a sweep.
        import importlib

        return importlib.import_module("edgekit.sweep")
    raise AttributeError(f"module 'edgekit' has no attribute '{name}'")


def load(source, input_shape=None) -> Model:
    """Shorthand for :meth:`edgekit.Model.load`."""
    return Model.load(source, input_shape)


__all__ = ["EdgekitError", "Model", "load", "compile", "profile", "estimate", "render", "CompileOptions"]
