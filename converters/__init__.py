"""edgekit.converters: Model -> Model (prune, quantize, spiking conversion, the patch schedule ...).

``prune``, ``quantize``, ``to_spiking``, ``to_streaming`` and ``nest`` are the public entries. They are imported on
first use, so that code which needs only a torch-free part of this package (the patch scheduler, used when planning
and estimating) starts without torch. Importing a submodule such as ``edgekit.converters.prune`` leaves the name
``prune`` on this package the function, as it has always been (the import system's attempt to set the submodule there
is ignored).
"""
import importlib
import sys
import types

_ENTRIES = {"prune": "edgekit.converters.prune", "quantize": "edgekit.converters.quantize",
            "to_spiking": "edgekit.converters.spiking", "to_streaming": "edgekit.converters.recurrent",
            "nest": "edgekit.converters.nested"}


def _entry(name: str) -> property:
    def get(self):
        return getattr(importlib.import_module(_ENTRIES[name]), name)

    def ignore(self, value):  # the import system binding the submodule of the same name
        pass

    return property(get, ignore, doc=f"edgekit.converters.{name} (imported on first use)")


class _Converters(types.ModuleType):
    prune = _entry("prune")
    quantize = _entry("quantize")
    to_spiking = _entry("to_spiking")
    to_streaming = _entry("to_streaming")
    nest = _entry("nest")


sys.modules[__name__].__class__ = _Converters
__all__ = list(_ENTRIES)
