"""Evidence that an artefact can be trusted: parity against a reference, golden files, benchmarks.

Torch-free (NumPy, OpenCV and the runtime only), so every check here also runs on the
deployment device. A checkpoint is opened through a PyTorch runner only when one is named.
"""
