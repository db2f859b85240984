"""edgekit.converters"""
from edgekit.converters.prune import prune  # noqa: F401
from edgekit.converters.quantize import quantize  # noqa: F401
