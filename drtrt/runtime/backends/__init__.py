"""The engines a model runs on, one module each behind the runner contract (:mod:`drtrt.runtime.base`):
ONNX Runtime (:mod:`.ort`), TensorRT (:mod:`.trt`, with :mod:`.trt_compat` for the releases it
supports and :mod:`.trt_manifest` for what an engine was built for), a Triton server
(:mod:`.triton`) and the CUDA memory path and GPU identity they share (:mod:`.cuda`). Runners are
found by import path (:mod:`drtrt.runtime.registry`): importing this package imports no engine.
"""
