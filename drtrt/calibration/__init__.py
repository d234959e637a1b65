"""Precision baked into the ONNX file (SPEC §5), each step checked against FP32.

:mod:`.fp16` (mixed-precision conversion), :mod:`.quantize` (INT8 Q/DQ from post-training
calibration on :mod:`.source`'s images), :mod:`.gate` (the candidate against FP32 with
``drtrt parity``'s thresholds), :mod:`.auto_exclude` and :mod:`.layerwise` (which layers to
keep in FP32 when INT8 fails), :mod:`.graph` (ONNX helpers they share) and :mod:`.api` (what
``drtrt calibrate`` and ``drtrt fp16`` run). Needs ``onnx`` and ``onnxruntime``; no torch.
"""
