"""Artefacts for deployment: a PyTorch model to ONNX (:mod:`.onnx_export`, needs torch and onnx)
and an ONNX model to a TensorRT engine with its manifest (:mod:`.trt_build`, needs TensorRT)."""
