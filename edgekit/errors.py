"""edgekit's exceptions: one type per class of failure, each with its own exit code.

Every error is meant for a person: the message names the file, layer or operator, the limit that was hit and what to
do about it. The CLI prints ``edgekit: error: <message>`` on one line and exits with :attr:`EdgekitError.exit_code`
(documented in docs/errors.md); ``--debug`` adds the traceback.
"""
from __future__ import annotations


class EdgekitError(Exception):
    """Base class. ``exit_code`` is distinct per subclass (see docs/errors.md)."""

    exit_code = 1


class UsageError(EdgekitError):
    """Bad command-line use or API arguments (unknown target, bad option value, OUT exists without --force)."""

    exit_code = 2


class ModelLoadError(EdgekitError):
    """A model file that does not exist, cannot be read, is corrupt or is not a model."""

    exit_code = 3


class ShapeError(EdgekitError):
    """Input, calibration or test data whose shape or dtype does not match the model."""

    exit_code = 4


class DataError(EdgekitError):
    """Calibration or test data that is empty, unreadable, or holds NaN/Inf (and weights with NaN/Inf)."""

    exit_code = 5


class UnsupportedError(EdgekitError):
    """Operators (or dynamic shapes) a target cannot run; the message lists every such layer at once."""

    exit_code = 6


class DoesNotFitError(EdgekitError):
    """The model does not fit the target's memories; the message gives the bytes over and options that help."""

    exit_code = 7


class ToolchainError(EdgekitError):
    """A tool edgekit needs (arm-none-eabi-gcc, qemu-system-arm, ...) is missing or failed; says how to install."""

    exit_code = 8


class FirmwareError(EdgekitError):
    """The firmware hung (time limit), faulted, or printed something edgekit cannot read."""

    exit_code = 9


class MismatchError(EdgekitError):
    """A run's outputs disagree with the host reference beyond the stated tolerance."""

    exit_code = 10


class LowFidelityError(EdgekitError):
    """The artifact runs and matches its own reference, but its outputs stray from the float model's beyond the
    documented bounds (edgekit/fidelity.py; ``edgekit profile --accept-low-fidelity`` accepts it)."""

    exit_code = 11


class DeviceError(EdgekitError):
    """A board behind a serial port did not answer, answered with frames that do not check out, runs another model,
    reported a fault, or could not be flashed (``edgekit profile OUT --device PORT``)."""

    exit_code = 12


class InterruptedError_(EdgekitError):
    """The user interrupted (Ctrl-C); nothing half-written was left behind."""

    exit_code = 130
