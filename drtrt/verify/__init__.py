"""Evidence that a model can be trusted: task metrics and evaluation against ground truth, parity
against a reference (live or from golden files), and benchmarks of the screening path.

Torch-free (NumPy, OpenCV and the runtime only), so every check here also runs on the
deployment device. A checkpoint is opened through a PyTorch runner only when one is named.
"""
