"""Every error drtrt raises on purpose. The CLI turns each into one line (no traceback).

Every message says what was expected, what was found, and what to do. The CLI's exit status
follows the class (``drtrt.cli.common.exit_code``): :class:`ConfigError` is a usage error,
:class:`GateError` a failed accuracy gate, any other :class:`DrtrtError` a failed command.
"""


class DrtrtError(Exception):
    """Base class of every error drtrt raises on purpose."""


class ConfigError(DrtrtError):
    """Invalid or inconsistent options (a usage error)."""


class DataError(DrtrtError):
    """A data set folder does not have the layout that was expected."""


class ImageError(DrtrtError):
    """An image file cannot be read or decoded. ``code``: file_damaged (truncated, corrupt data, not
    an image, empty), file_unreadable (the path cannot be read), file_too_large, or for a DICOM file
    drtrt cannot use one of dicom_needs_pydicom, dicom_no_image, dicom_transfer_syntax,
    dicom_multiframe, dicom_bit_depth, dicom_colour (:mod:`drtrt.preprocess.dicom`)."""

    def __init__(self, message: str, code: str = "file_damaged") -> None:
        super().__init__(message)
        self.code = code



class ArtefactError(DrtrtError):
    """A model file, checkpoint or engine manifest is missing, unreadable or mismatched."""


class BackendUnavailable(DrtrtError):
    """An optional dependency (torch, onnx, TensorRT, ...) is not installed."""


class ShapeError(ConfigError):
    """A feed does not match a model's inputs: a name, dtype or dimension, or a batch outside an
    engine's optimisation profile."""


class RunnerStateError(DrtrtError, RuntimeError):
    """A runner was used outside its lifecycle (``infer`` or ``info`` before ``activate``)."""


class CudaError(DrtrtError):
    """A CUDA call failed (out of memory, invalid address, driver problem)."""


class GateError(DrtrtError):
    """A model missed an accuracy gate (reduced precision against FP32, parity, a benchmark floor)."""


class SendError(DrtrtError):
    """A server (PACS, FHIR) could not be reached or did not confirm what was sent to it; what it did
    not confirm stays queued in the session's outbox for the next ``drtrt sync``."""


class ServerUnavailable(DrtrtError):
    """An inference server (Triton) could not be reached, or its model was not ready, after the
    retries: the run stops, what was committed stays, and the same command resumes it."""
