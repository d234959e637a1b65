"""What runs on the device: the runner contract and its backends (ONNX Runtime, TensorRT), the one
batched inference loop, the predictor (decode → preprocess → quality gate → model → findings) and
the crash-safe screening session with its reports. Imports no torch: the PyTorch runner is
registered by import path (:mod:`.registry`) and lives in :mod:`drtrt.train`.
"""
