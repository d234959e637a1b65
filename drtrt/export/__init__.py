"""Artefacts for deployment: a PyTorch model to ONNX (:mod:`.onnx_export`, needs torch and onnx)
and an ONNX model to a TensorRT engine with its manifest (:mod:`.trt_build`, needs TensorRT; its
options in :mod:`.build_config`, the timing cache in :mod:`.timing_cache`, the rebuild check in
:mod:`.staleness`, DLA cores in :mod:`.dla`).

Like :mod:`drtrt.train`, importing this package makes OpenMP threads sleep rather than spin
(``OMP_WAIT_POLICY=PASSIVE`` unless set) before :mod:`.onnx_export` imports torch.
"""

from drtrt.cpu import quiet_openmp

quiet_openmp()
