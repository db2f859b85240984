"""edgekit.converters"""
from edgekit.converters.prune import prune  # noqa: F401
from edgekit.converters.quantize import quantize  # noqa: F401
from edgekit.converters.spiking import to_spiking  # noqa: F401
