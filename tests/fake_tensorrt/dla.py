"""DLA in the TensorRT double: where the builder places each layer, and which core a loaded engine runs on.

What the real releases do (NVIDIA's "Working with DLA", "Strongly Typed Networks for DLA" and "DLA
Runtime Configuration" for 11.4.1; the IRuntime header):

- DLA runs FP16 and INT8 only. A weakly typed network (8.x, DLA builds on 10.x) gets there with
  BuilderFlag.FP16/INT8. A strongly typed one (every 11.x network) has no such flags: the layers'
  own tensor types decide, so an ONNX never converted to FP16 keeps FP32 layers, none of which DLA
  can take. Q/DQ layers are INT8 and may go to DLA.
- Some ops have no DLA implementation at all (:data:`NOT_ON_DLA`, this double's short list).
- With BuilderFlag.GPU_FALLBACK every layer that cannot run on DLA silently goes to the GPU ("verify
  DLA layer assignments"): an FP32 ONNX with fallback is an all-GPU FP32 engine. Without the flag
  the build fails.
- ``IRuntime.DLA_core`` defaults to -1 and is read when an engine is deserialised: a DLA engine
  loaded without it set runs on DLA core 0 whatever core it was built for (onnxruntime#28364,
  jkjung-avt/tensorrt_demos#463). On a device without DLA, setting it does nothing and the engine
  cannot be loaded.

Not modelled: DLA's per-core subgraph limit and layer parameter limits (the real builder may move
more layers to the GPU than :func:`can_run_on_dla` says), and the fusion of Q/DQ pairs into INT8
layers (here a layer between Q/DQ nodes keeps its own FP32 type, so it counts as GPU).
"""

from __future__ import annotations

NOT_ON_DLA = ("Resize", "Softmax", "Gather", "Shape")
_QDQ = ("QuantizeLinear", "DequantizeLinear")


def why_not_on_dla(layer, strongly_typed: bool, flags: set[str], float32, half) -> str | None:
    """None when ``layer`` may run on DLA, else the reason it may not."""
    if layer._op in NOT_ON_DLA:
        return f"{layer._op} has no DLA implementation"
    if layer._op in _QDQ:
        return None
    floats = [t._dtype for t in layer._outputs if t._dtype in (float32, half)]
    if not floats:
        return None
    if strongly_typed:
        return None if all(d == half for d in floats) else "FP32, and DLA runs FP16 or INT8 only"
    return None if flags & {"FP16", "INT8"} else "FP32 (no FP16 or INT8 builder flag), and DLA runs FP16 or INT8 only"


def place(network, flags: set[str], float32, half) -> tuple[list, list[tuple[object, str]]]:
    """(layers on DLA, [(layer, reason) on the GPU]) for a network whose default device is DLA."""
    on_dla, on_gpu = [], []
    for layer in network._layers:
        reason = why_not_on_dla(layer, network._strongly_typed, flags, float32, half)
        if reason is None:
            on_dla.append(layer)
        else:
            on_gpu.append((layer, reason))
    return on_dla, on_gpu


def load_core(built_for: int | None, runtime_core: int, cores: int) -> tuple[int | None, str | None]:
    """(DLA core the engine runs on, error) for a plan built for DLA core ``built_for`` (None: no
    layer on DLA) loaded by a runtime whose DLA_core is ``runtime_core`` on a device with ``cores``."""
    if built_for is None:
        return None, None
    if cores == 0:
        return None, ("DLA Error in deserialize: the engine has layers on DLA but this device has no DLA core "
                      "(Error Code 4: Internal Error (Engine deserialization failed.))")
    return (runtime_core if runtime_core >= 0 else 0), None
