"""Training the thesis network with PyTorch: model, fusion modules, losses, data, the training loop,
checkpoints (and their ONNX export), pseudo-labels, seed sweeps and ablations, and the PyTorch
runner that scores a checkpoint through the same runner contract as an exported model.

Importing this package sets ``OMP_WAIT_POLICY=PASSIVE`` (unless it is set, or ``DRTRT_CPU_SPIN=1``)
before any of its modules imports torch: PyTorch's OpenMP threads then sleep instead of
spin-waiting on a CPU other processes share (:mod:`drtrt.cpu`).
"""

from drtrt.cpu import quiet_openmp

quiet_openmp()
