"""Errors the CLI turns into one-line messages (no traceback).

Every message says what was expected, what was found, and what to do.
"""


class DrtrtError(Exception):
    """Base class: the CLI prints ``str(error)`` and exits with status 1."""


class ConfigError(DrtrtError):
    """Invalid or inconsistent options."""


class DataError(DrtrtError):
    """A data set folder does not have the layout that was expected."""


class ImageError(DrtrtError):
    """An image file cannot be read or decoded."""


class ArtefactError(DrtrtError):
    """A model file, checkpoint or manifest is missing, unreadable or mismatched."""


class BackendUnavailable(DrtrtError):
    """An optional dependency (torch, onnx, TensorRT, ...) is not installed."""
