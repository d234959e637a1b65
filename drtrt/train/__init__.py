"""Training the thesis network with PyTorch: model, fusion modules, losses, data, the training loop,
checkpoints (and their ONNX export), pseudo-labels, seed sweeps and ablations, and the PyTorch
runner that scores a checkpoint through the same runner contract as an exported model.
"""
