"""Serving drtrt models from NVIDIA Triton Inference Server (reading centres).

:mod:`.repository` writes the model repository ``drtrt export-triton`` makes (``config.pbtxt``
from the model's own metadata, an ensemble taking raw photo bytes, warm-up, the repository
manifest); :mod:`.triton_python` holds the models the repository runs in Triton's Python backend
(drtrt's preprocessing, and ONNX Runtime where the server has no ONNX Runtime backend). The
client side is :class:`drtrt.runtime.backends.triton.TritonRunner` (``triton://HOST:PORT/MODEL``).
"""
