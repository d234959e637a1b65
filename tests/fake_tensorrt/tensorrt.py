"""Test double of TensorRT's Python API that computes with ONNX Runtime (8.6, 10.x and 11.x).

Faithful by construction where it can be: every enum (with its real values) comes from the real
bindings' surface of the emulated version (surface/trt-*.json), and every public attribute read
or written on this module, its classes or their objects is checked against that surface —
a name TensorRT X does not have raises AttributeError here too, and every name used is recorded
in ``_accessed``. Method parameter names follow the real pybind11 signatures (checked by
tests/test_trt.py). Behaviour emulated, per version:

- 8.x needs an explicit-batch network for the ONNX parser; 10.x takes flags 0; 11.x has no
  EXPLICIT_BATCH flag and its networks are always strongly typed;
- weakly typed networks with Q/DQ layers need BuilderFlag.INT8; strongly typed networks refuse
  precision flags (and 11.x has none);
- dynamic inputs need an optimisation profile; shapes outside it are refused by the context;
- timing caches are keyed by TensorRT version + GPU, hits/misses are recorded in ``_builds``;
- a new IBuilderConfig has BuilderFlag.TF32 set, as the real one: with it, on compute capability
  8.0+, every FP32 convolution and matrix multiply rounds its inputs to TF32 (tf32.py; the layers
  are in ``_builds[-1]["tf32_layers"]``);
- IProgressMonitor (10.x+) gets phases and steps, and cancels the build when a step returns False;
- plans carry the version and compute capability, and deserialising on another refuses them;
- ``execute_async_v3`` enqueues on the fake stream, reading and writing fake device memory by
  address (see devmem.py) — or a real GPU's memory through cudaMemcpy (realmem.py, for
  tests/hardware/cuda_check.py);
- precision, as the real builder is free to choose it: a strongly typed network runs the ONNX's
  own types (ONNX Runtime on the ONNX in the plan); a weakly typed one with BuilderFlag.FP16 runs
  every layer it may put in FP16 in FP16 — the worst case TensorRT is allowed — by rounding that
  layer's float outputs (and the network inputs it reads) to FP16: values beyond 65504 become inf,
  the rest lose their low bits. A layer is held in FP32 only by ``layer.precision`` /
  ``set_output_type`` = float32 *and* BuilderFlag.OBEY/PREFER_PRECISION_CONSTRAINTS (without the
  flag TensorRT ignores the constraints, with a warning). Q/DQ layers keep ONNX Runtime's INT8.
  Arithmetic inside a layer stays FP32: the double models the precision of what a layer stores.
- DLA (dla.py): with DeviceType.DLA a layer goes to DLA only if DLA has its op and it is FP16 or
  INT8 (weakly typed: by the builder flags; strongly typed: by its own tensor types), the rest to
  the GPU only with BuilderFlag.GPU_FALLBACK (``_builds[-1]["dla_layers"]`` / ``["gpu_layers"]``);
  a deserialised DLA engine runs on ``Runtime.DLA_core``, core 0 when it was not set (``_loads``);
  10.8 to 11.4.0 see no DLA core (11.4.1 brings DLA back on AGX Orin).

Never importable as ``tensorrt`` by accident: tests inject it through ``fake_tensorrt.install()``.
"""

from __future__ import annotations

import builtins
import enum
import json
import struct
import sys
import types
from pathlib import Path

import numpy as np

from fake_tensorrt import dla as _dla
from fake_tensorrt.tf32 import apply_tf32 as _apply_tf32, node_key as _node_key, tf32_layers as _tf32_layers

__version__ = "0"
device = None                     # the FakeDevice (fake_tensorrt.devmem); set by _configure
_accessed: set[tuple[str, str]] = set()
_builds: list[dict] = []
_loads: list[dict] = []           # one per deserialised engine: the DLA core it runs on (dla.py)
_surface: dict = {}
_PLAN_MAGIC, _CACHE_MAGIC = b"FAKE-TRT-PLAN\x00", b"FAKE-TRT-CACHE\x00"
_DTYPE_ALIASES = {"float32": "FLOAT", "float16": "HALF", "bfloat16": "BF16", "int8": "INT8", "int32": "INT32",
                  "int64": "INT64", "bool": "BOOL", "uint8": "UINT8", "fp8": "FP8", "int4": "INT4", "fp4": "FP4",
                  "e8m0": "E8M0"}
_ONNX_TYPES = {1: "FLOAT", 10: "HALF", 6: "INT32", 7: "INT64", 3: "INT8", 2: "UINT8", 9: "BOOL"}


# ---------------------------------------------------------------- surface gating

def _members(klass: type) -> dict:
    return _surface["classes"].get(klass.__name__, {}).get("members", {})


def _check(cls: type, obj: object, name: str, setting: bool) -> None:
    """Allow ``name`` if user code defined it, else only if the emulated TensorRT has it."""
    if obj is not None and name in getattr(obj, "__dict__", {}) and not setting:
        return
    for klass in cls.__mro__:
        if klass.__module__ != __name__:
            if name in vars(klass):
                return                           # defined by a user subclass (a logger, a monitor)
            continue
        if klass is _Api:
            break
        member = _members(klass).get(name)
        if member is None:
            if setting and cls.__module__ != __name__:
                return                           # user subclass state, e.g. self.messages = []
            raise AttributeError(f"'{klass.__name__}' has no attribute '{name}' in TensorRT {__version__}")
        if setting and not (isinstance(member, dict) and member.get("writable")):
            raise AttributeError(f"'{klass.__name__}.{name}' is read-only in TensorRT {__version__}")
        _accessed.add((klass.__name__, name))
        return


class _Meta(type):
    def __getattribute__(cls, name):
        if not name.startswith("_") and _surface:
            _check(cls, None, name, setting=False)
        return type.__getattribute__(cls, name)


class _Api(metaclass=_Meta):
    def __getattribute__(self, name):
        if not name.startswith("_") and _surface:
            _check(type(self), self, name, setting=False)
        return object.__getattribute__(self, name)

    def __setattr__(self, name, value):
        if not name.startswith("_") and _surface:
            _check(type(self), self, name, setting=True)
        object.__setattr__(self, name, value)


class _GatedModule(types.ModuleType):
    def __getattribute__(self, name):
        surface = types.ModuleType.__getattribute__(self, "__dict__").get("_surface")
        if not name.startswith("_") and surface:
            if name not in surface["module"]:
                raise AttributeError(f"module 'tensorrt' has no attribute '{name}' in TensorRT {surface['version']}")
            _accessed.add(("tensorrt", name))
        return types.ModuleType.__getattribute__(self, name)


_SAME_API = {"8.5.2": "8.6.1", "11.4.1": "11.4.0"}


def _configure(version: str, fake_device) -> None:
    """Become TensorRT ``version`` (a surface file name: 8.6.1, 10.3.0, 10.13.3, 11.4.0), or one with
    another's API (``_SAME_API``): 8.5.2, JetPack 5.1's, has 8.6.1's API for everything drtrt uses
    but the ``nptype`` below; 11.4.1, JetPack 7.2.2's (the SBSA build, not on PyPI), has 11.4.0's,
    its release notes naming no API change, only DLA back on AGX Orin (dla.py)."""
    global __version__, device, _surface
    surface = _SAME_API.get(version, version)
    _surface = json.loads((Path(__file__).parent / "surface" / f"trt-{surface}.json").read_text())
    __version__, device = version if version in _SAME_API else _surface["version"], fake_device
    space = globals()
    for name, members in _surface["enums"].items():
        space[name] = enum.IntEnum(name, members)
    for alias, member in _DTYPE_ALIASES.items():
        if alias in _surface["module"]:
            space[alias] = space["DataType"][member]
    for name in [n for n, v in space.items() if not n.startswith("_") and getattr(v, "__module__", None) == __name__
                 and isinstance(v, (type, types.FunctionType)) and n not in _surface["module"]]:
        del space[name]                          # e.g. IProgressMonitor on 8.6


# ---------------------------------------------------------------- logging, data types, dims

class _Severity(enum.IntEnum):
    INTERNAL_ERROR = 0
    ERROR = 1
    WARNING = 2
    INFO = 3
    VERBOSE = 4


class ILogger(_Api):
    Severity = _Severity
    INTERNAL_ERROR, ERROR, WARNING, INFO, VERBOSE = _Severity

    def __init__(self):
        pass

    def log(self, severity, msg):
        raise RuntimeError("Tried to call pure virtual function \"ILogger::log\"")


class Logger(ILogger):
    def __init__(self, min_severity=_Severity.WARNING):
        self._min = min_severity

    def log(self, severity, msg):
        if severity <= self._min:
            print(f"[fake TRT] {msg}", file=sys.stderr)

    @property
    def min_severity(self):
        return self._min


_global_logger = None   # the first logger given to a Builder or Runtime: TensorRT sends everything there
# ONNX ops onnx-tensorrt has no importer for (its operators.md): ORT's QOperator quantization, strings,
# sequences, optionals; any op outside the default domain too (com.microsoft contrib ops)
_NO_IMPORTER = frozenset({"QLinearConv", "QLinearMatMul", "ConvInteger", "MatMulInteger", "DynamicQuantizeLinear",
                          "Unique", "StringNormalizer", "TfIdfVectorizer", "RegexFullMatch", "StringConcat",
                          "StringSplit", "SequenceConstruct", "SequenceAt", "SequenceInsert", "SequenceErase",
                          "SequenceLength", "SequenceEmpty", "SplitToSequence", "ConcatFromSequence", "Optional",
                          "OptionalHasElement", "OptionalGetElement"})


def _take_logger(logger):
    """As the real library: the first logger becomes the global one; a different one later is
    ignored with a warning (NVIDIA/TensorRT#1475)."""
    global _global_logger
    if _global_logger is None:
        _global_logger = logger
    elif logger is not _global_logger:
        _log(logger, 2, "The logger passed into createInferRuntime differs from one already provided for an "
                        "existing builder, runtime, or refitter. Uses of the global logger, returned by "
                        "nvinfer1::getLogger(), will return the existing value.")
    return logger


def _log(logger, severity, msg):
    (_global_logger or logger).log(_Severity(severity), msg)


def _dla_cores():
    """The DLA cores this release can use on the device: none from 10.8 to 11.4.0 on Linux (10.7 was
    the last 10.x with DLA; 11.4.0 has it on Windows on ARM only; 11.4.1 brings it back on AGX Orin)."""
    major, minor, patch = (int(p) for p in (__version__.split(".") + ["0", "0"])[:3])
    return 0 if (10, 8) <= (major, minor) and (major, minor, patch) <= (11, 4, 0) else device.gpu.dla_cores


def nptype(trt_type):
    if __version__.startswith("8.5."):   # 8.5 builds its table with np.bool, gone from NumPy 1.24 to 1.26
        raise AttributeError("module 'numpy' has no attribute 'bool'.")   # (NVIDIA/TensorRT#2557, #2701)
    return _np_type(trt_type)


def _np_type(trt_type):                  # the double's own use, whatever version it plays
    mapping = {"FLOAT": np.float32, "HALF": np.float16, "INT8": np.int8, "INT32": np.int32, "INT64": np.int64,
               "BOOL": np.bool_, "UINT8": np.uint8}
    if trt_type.name in mapping:
        return mapping[trt_type.name]
    raise TypeError("Could not resolve TensorRT datatype to an equivalent numpy datatype.")


def volume(iterable):
    return int(np.prod(list(iterable))) if len(list(iterable)) else 1


class Dims(_Api):
    def __init__(self, shape=()):
        self._dims = tuple(int(d) for d in shape)

    def __len__(self):
        return len(self._dims)

    def __getitem__(self, index):
        return self._dims[index]

    def __iter__(self):
        return iter(self._dims)

    def __eq__(self, other):
        return tuple(self) == tuple(other)

    def __repr__(self):
        return f"Dims({self._dims})"


class IHostMemory(builtins.bytes, _Api):
    @property
    def nbytes(self):
        return len(self)

    @property
    def dtype(self):
        return DataType.UINT8  # noqa: F821 - made by _configure


# ---------------------------------------------------------------- network + parser

class ITensor(_Api):
    def __init__(self, name, shape, dtype):
        self._name, self._shape, self._dtype = name, Dims(shape), dtype

    @property
    def name(self):
        return self._name

    @property
    def shape(self):
        return self._shape

    @property
    def dtype(self):
        return self._dtype


class ILayer(_Api):
    """One layer per ONNX node, named after it (onnx-tensorrt registers a node's layer under the node's
    name), its output tensors named after the node's outputs."""

    def __init__(self, layer_type, op, name, inputs, outputs):
        self._type, self._op, self._name = layer_type, op, name
        self._inputs, self._outputs = inputs, outputs
        self._precision, self._output_types = None, {}

    type = property(lambda self: self._type)
    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))

    @property
    def name(self):
        return self._name

    @name.setter
    def name(self, value):
        self._name = value

    def get_input(self, index):
        return self._inputs[index] if 0 <= index < len(self._inputs) else None

    def get_output(self, index):
        return self._outputs[index] if 0 <= index < len(self._outputs) else None

    @property
    def precision(self):
        return self._precision if self._precision is not None else DataType.FLOAT  # noqa: F821

    @precision.setter
    def precision(self, dtype):
        self._precision = dtype

    precision_is_set = property(lambda self: self._precision is not None)

    def reset_precision(self):
        self._precision = None

    def set_output_type(self, index, dtype):
        if not 0 <= index < len(self._outputs):
            raise IndexError(f"output index {index} out of range for layer {self._name}")
        self._output_types[index] = dtype

    def get_output_type(self, index):
        return self._output_types.get(index, self._outputs[index]._dtype)

    def output_type_is_set(self, index):
        return index in self._output_types

    def reset_output_type(self, index):
        self._output_types.pop(index, None)

    def _held_fp32(self):
        float32 = DataType.FLOAT  # noqa: F821
        return self._precision == float32 or any(t == float32 for t in self._output_types.values())


class INetworkDefinition(_Api):
    def __init__(self, flags):
        self._flags, self._inputs, self._outputs, self._layers, self._onnx = flags, [], [], [], b""
        kinds = NetworkDefinitionCreationFlag  # noqa: F821 - made by _configure
        self._explicit_batch = int(__version__.split(".")[0]) >= 10 or builtins.bool(flags & (1 << int(kinds.EXPLICIT_BATCH)))
        self._strongly_typed = int(__version__.split(".")[0]) >= 11 or (
            "STRONGLY_TYPED" in kinds.__members__ and builtins.bool(flags & (1 << int(kinds.STRONGLY_TYPED))))

    num_inputs = property(lambda self: len(self._inputs))
    num_outputs = property(lambda self: len(self._outputs))
    num_layers = property(lambda self: len(self._layers))

    def get_input(self, index):
        return self._inputs[index]

    def get_output(self, index):
        return self._outputs[index]

    def get_layer(self, index):
        return self._layers[index]

    def get_flag(self, flag):
        return builtins.bool(self._flags & (1 << int(flag)))

    @property
    def has_explicit_precision(self):
        return self._has_qdq()

    def _has_qdq(self):
        return any(layer._op in ("QuantizeLinear", "DequantizeLinear") for layer in self._layers)


class ParserError(_Api):
    def __init__(self, desc, node=-1):
        self._desc, self._node = desc, node

    def desc(self):
        return self._desc

    def node(self):
        return self._node

    def __str__(self):
        return f"In node {self._node}: {self._desc}"


class OnnxParser(_Api):
    def __init__(self, network, logger):
        self._network, self._logger, self._errors = network, logger, []

    num_errors = property(lambda self: len(self._errors))

    def get_error(self, index):
        return self._errors[index]

    def parse_from_file(self, model):
        import onnx

        net = self._network
        if not net._explicit_batch:
            self._errors.append(ParserError("The ONNX parser only supports networks with an explicit batch dimension"))
            return False
        try:
            proto = onnx.load(model)
        except Exception as exc:  # noqa: BLE001 - whatever onnx raises for a bad file
            self._errors.append(ParserError(f"Failed to parse ONNX model from file: {model} ({type(exc).__name__})"))
            return False
        graph, types_ = proto.graph, DataType  # noqa: F821
        known = {i.name for i in graph.initializer}
        shape = lambda v: [d.dim_value if d.dim_value > 0 else -1 for d in v.type.tensor_type.shape.dim]  # noqa: E731
        dtype = lambda v: types_[_ONNX_TYPES.get(v.type.tensor_type.elem_type, "FLOAT")]  # noqa: E731
        net._inputs = [ITensor(v.name, shape(v), dtype(v)) for v in graph.input if v.name not in known]
        net._outputs = [ITensor(v.name, shape(v), dtype(v)) for v in graph.output]
        kinds = {"QuantizeLinear": "QUANTIZE", "DequantizeLinear": "DEQUANTIZE", "Conv": "CONVOLUTION",
                 "Softmax": "SOFTMAX", "ReduceMean": "REDUCE", "ReduceMax": "REDUCE", "Gemm": "MATRIX_MULTIPLY",
                 "MatMul": "MATRIX_MULTIPLY", "Cast": "CAST" if "CAST" in LayerType.__members__ else "IDENTITY",  # noqa: F821
                 "Constant": "CONSTANT", "Shape": "SHAPE", "Resize": "RESIZE"}
        for index, node in enumerate(graph.node):       # as onnx-tensorrt: ops it has no importer for
            if node.domain not in ("", "ai.onnx") or node.op_type in _NO_IMPORTER:
                self._errors.append(ParserError(f"While parsing node number {index} [{node.op_type} -> "
                                                f"\"{node.output[0] if node.output else ''}\"]: No importer registered "
                                                f"for op: {node.op_type}", index))
                return False
        inferred = onnx.shape_inference.infer_shapes(proto).graph
        tensors = {v.name: ITensor(v.name, shape(v), dtype(v))
                   for v in (*inferred.value_info, *graph.input, *graph.output)}
        tensors.update({i.name: ITensor(i.name, list(i.dims), types_[_ONNX_TYPES.get(i.data_type, "FLOAT")])
                        for i in graph.initializer})
        tensor = lambda name: tensors.get(name) or ITensor(name, [], types_.FLOAT)  # noqa: E731
        net._layers = [ILayer(LayerType[kinds.get(n.op_type, "ELEMENTWISE")], n.op_type,  # noqa: F821
                              n.name or f"node_of_{n.output[0]}", [tensor(i) for i in n.input if i],
                              [tensor(o) for o in n.output]) for n in graph.node]
        for layer in net._layers:
            layer._net = net
        net._onnx = Path(model).read_bytes()
        return True


# ---------------------------------------------------------------- builder

class IOptimizationProfile(_Api):
    def __init__(self):
        self._shapes = {}

    def set_shape(self, input, min, opt, max):  # noqa: A002 - real parameter names
        self._shapes[input] = tuple(tuple(int(d) for d in s) for s in (min, opt, max))

    def get_shape(self, input):  # noqa: A002
        return [Dims(s) for s in self._shapes[input]]


class ITimingCache(_Api):
    def __init__(self, key, entries=()):
        self._key, self._entries = key, set(entries)

    def serialize(self):
        body = json.dumps({"key": self._key, "entries": sorted(self._entries)}).encode()
        return IHostMemory(_CACHE_MAGIC + body)


class IProgressMonitor(_Api):
    def __init__(self):
        pass

    def phase_start(self, phase_name, parent_phase, num_steps):
        raise RuntimeError("Tried to call pure virtual function \"IProgressMonitor::phaseStart\"")

    def step_complete(self, phase_name, step):
        raise RuntimeError("Tried to call pure virtual function \"IProgressMonitor::stepComplete\"")

    def phase_finish(self, phase_name):
        raise RuntimeError("Tried to call pure virtual function \"IProgressMonitor::phaseFinish\"")


def _device_key():
    gpu = device.gpu
    return {"tensorrt": __version__, "gpu": gpu.name, "cc": [gpu.major, gpu.minor]}


class IBuilderConfig(_Api):
    def __init__(self, logger):   # a new config has TF32 set, as in every real release (8.6-11.x)
        self._logger, self._flags, self._pools, self._profiles = logger, {"TF32"}, {}, []
        self._cache, self._monitor = None, None
        self.default_device_type, self.DLA_core = DeviceType.GPU, -1  # noqa: F821 - made by _configure

    def set_memory_pool_limit(self, pool, pool_size):
        self._pools[pool.name] = int(pool_size)

    def get_memory_pool_limit(self, pool):
        return self._pools.get(pool.name, device.gpu.total_memory)

    def set_flag(self, flag):
        self._flags.add(flag.name)

    def clear_flag(self, flag):
        self._flags.discard(flag.name)

    def get_flag(self, flag):
        return flag.name in self._flags

    def can_run_on_DLA(self, layer):  # noqa: N802 - real name
        """Whether ``layer`` may run on DLA under this config (its op, and FP16/INT8: dla.py)."""
        return _dla.why_not_on_dla(layer, layer._net._strongly_typed, self._flags, DataType.FLOAT,  # noqa: F821
                                   DataType.HALF) is None  # noqa: F821

    def add_optimization_profile(self, profile):
        for name, (low, opt, high) in profile._shapes.items():
            if not (len(low) == len(opt) == len(high) and all(a <= b <= c for a, b, c in zip(low, opt, high))):
                _log(self._logger, 1, f"Optimization profile for '{name}' needs min <= opt <= max, got {low} {opt} {high}")
                return -1
        self._profiles.append(profile)
        return len(self._profiles) - 1

    num_optimization_profiles = property(lambda self: len(self._profiles))

    def create_timing_cache(self, serialized_timing_cache):
        blob = bytes(serialized_timing_cache)
        if not blob:
            return ITimingCache(_device_key())
        if not blob.startswith(_CACHE_MAGIC):
            _log(self._logger, 2, "Invalid timing cache blob; starting with an empty cache")
            return ITimingCache(_device_key())
        data = json.loads(blob[len(_CACHE_MAGIC):])
        return ITimingCache(data["key"], data["entries"])

    def set_timing_cache(self, cache, ignore_mismatch):
        if cache._key != _device_key() and not ignore_mismatch:
            _log(self._logger, 2, f"Timing cache was made for {cache._key}, not {_device_key()}")
            return False
        self._cache = cache
        return True

    def get_timing_cache(self):
        return self._cache

    @property
    def progress_monitor(self):
        return self._monitor

    @progress_monitor.setter
    def progress_monitor(self, monitor):
        self._monitor = monitor


class Builder(_Api):
    def __init__(self, logger):
        self._logger = _take_logger(logger)
        if device is None or not device.gpu.present:
            _log(logger, 1, "CUDA initialization failure with error: 35")
            raise TypeError("pybind11::init(): factory function returned nullptr")

    @property
    def num_DLA_cores(self):  # noqa: N802 - real name
        return _dla_cores()

    def create_network(self, flags=0):
        allowed = sum(1 << int(f) for f in NetworkDefinitionCreationFlag)  # noqa: F821
        if flags & ~allowed:
            raise TypeError(f"invalid network creation flags {flags:#x} for TensorRT {__version__}")
        return INetworkDefinition(flags)

    def create_builder_config(self):
        return IBuilderConfig(self._logger)

    def create_optimization_profile(self):
        return IOptimizationProfile()

    @property
    def platform_has_fast_fp16(self):
        return True

    def _problems(self, network, config):
        problems = []
        dynamic = [t for t in network._inputs if any(d < 0 for d in t._shape)]
        if dynamic and not config._profiles:
            problems.append("Network has dynamic or shape inputs, but no optimization profile has been defined.")
        for profile in config._profiles:
            for tensor in dynamic:
                shapes = profile._shapes.get(tensor._name)
                if shapes is None:
                    problems.append(f"Optimization profile is missing values for input '{tensor._name}'")
                    continue
                for shape in shapes:
                    if len(shape) != len(tensor._shape) or any(d >= 0 and s != d for s, d in zip(shape, tensor._shape)):
                        problems.append(f"profile shape {shape} does not fit input '{tensor._name}' {tuple(tensor._shape)}")
        if config.default_device_type == DeviceType.DLA:  # noqa: F821 - as TensorRT checks a DLA build
            if not 0 <= config.DLA_core < _dla_cores():
                problems.append(f"Cannot create DLA engine, {config.DLA_core} not available "
                                f"({_dla_cores()} DLA cores)")
            for profile in config._profiles:
                if any(len(set(shapes)) > 1 for shapes in profile._shapes.values()):
                    problems.append("DLA supports only static shapes: min, opt and max of the profile must match")
            _, off_dla = _dla.place(network, config._flags, DataType.FLOAT, DataType.HALF)  # noqa: F821
            if off_dla and "GPU_FALLBACK" not in config._flags:
                layer, why = off_dla[0]
                problems.append(f"{layer._op} layer '{layer._name}' ({why}) cannot run on DLA and GPU fallback "
                                "is not enabled")
        precision = config._flags & {"FP16", "INT8"}
        if network._strongly_typed and precision:
            problems.append(f"BuilderFlag {sorted(precision)} cannot be used with a strongly typed network")
        if not network._strongly_typed and network._has_qdq() and "INT8" not in config._flags:
            problems.append("Network contains Q/DQ layers but INT8 is not enabled in the builder config")
        return problems

    def build_serialized_network(self, network, config):
        problems = self._problems(network, config)
        for problem in problems:
            _log(self._logger, 1, problem)
        if problems:
            return None
        monitor, layers = config._monitor, network._layers
        if monitor is not None:
            monitor.phase_start("Building engine", None, 2)
            monitor.phase_start("Tactic selection", "Building engine", len(layers))
            for i in range(len(layers)):
                if not monitor.step_complete("Tactic selection", i):
                    _log(self._logger, 1, "Build was cancelled by the progress monitor")
                    return None
            monitor.phase_finish("Tactic selection")
            monitor.step_complete("Building engine", 1)
            monitor.phase_finish("Building engine")
        cache = config._cache if config._cache is not None else ITimingCache(_device_key())
        keys = {f"{layer._op}#{i}:{sorted(config._flags)}" for i, layer in enumerate(layers)}
        hits = len(keys & cache._entries)
        cache._entries |= keys
        _builds.append({"hits": hits, "misses": len(keys) - hits, "flags": sorted(config._flags),
                        "device_type": config.default_device_type.name, "dla_core": config.DLA_core,
                       "pools": dict(config._pools), "strongly_typed": network._strongly_typed,
                       "monitor": monitor is not None})
        fp16 = _in_fp16(network, config)
        _builds[-1]["fp16_layers"] = sorted(layer._name for layer in fp16)
        on_dla = []
        if config.default_device_type == DeviceType.DLA:  # noqa: F821 - the rest fell back to the GPU, silently
            on_dla, _ = _dla.place(network, config._flags, DataType.FLOAT, DataType.HALF)  # noqa: F821
        _builds[-1]["dla_layers"] = [layer._name for layer in on_dla]
        _builds[-1]["gpu_layers"] = [layer._name for layer in layers if layer not in on_dla]
        spec = lambda t: {"name": t._name, "shape": list(t._shape), "dtype": t._dtype.name}  # noqa: E731
        header = json.dumps({"version": __version__, "cc": [device.gpu.major, device.gpu.minor],
                             "dla_core": config.DLA_core if on_dla else None,
                             "inputs": [spec(t) for t in network._inputs], "outputs": [spec(t) for t in network._outputs],
                             "profiles": [{k: [list(s) for s in v] for k, v in p._shapes.items()} for p in config._profiles]
                             }).encode()
        tf32 = _tf32_layers(layers, DataType.FLOAT, device.gpu.major, config._flags, fp16)  # noqa: F821
        _builds[-1]["tf32_layers"] = sorted(layer._name for layer in tf32)
        keys = {_node_key(node): {t._name for t in layer._inputs if t._dtype == DataType.FLOAT}  # noqa: F821
                for node, layer in zip(_onnx_nodes(network._onnx), layers) if layer in tf32}
        onnx_bytes = _round_to_fp16(network._onnx, fp16, network) if fp16 else network._onnx
        onnx_bytes = _apply_tf32(onnx_bytes, keys) if keys else onnx_bytes
        return IHostMemory(_PLAN_MAGIC + struct.pack("<I", len(header)) + header + onnx_bytes)


_FLOAT_OPS_EXEMPT = ("QuantizeLinear", "DequantizeLinear", "Shape", "Constant")


def _in_fp16(network, config):
    """The layers a weakly typed build with BuilderFlag.FP16 may run in FP16 (all float layers but
    Q/DQ and shape arithmetic, unless held in FP32 by a precision constraint the flags obey)."""
    if network._strongly_typed or "FP16" not in config._flags:
        return []
    obey = builtins.bool(config._flags & {"OBEY_PRECISION_CONSTRAINTS", "PREFER_PRECISION_CONSTRAINTS", "STRICT_TYPES"})
    if not obey and any(layer._held_fp32() for layer in network._layers):
        _log(config._logger, 2, "Detected layers with precision constraints but neither OBEY_PRECISION_CONSTRAINTS "
             "nor PREFER_PRECISION_CONSTRAINTS builder flag is set; the constraints are ignored")
    float32, half = DataType.FLOAT, DataType.HALF  # noqa: F821
    return [layer for layer in network._layers
            if layer._op not in _FLOAT_OPS_EXEMPT and any(t._dtype in (float32, half) for t in layer._outputs)
            and not (obey and layer._held_fp32())]


def _onnx_nodes(onnx_bytes):
    import onnx

    return list(onnx.load_from_string(onnx_bytes).graph.node)


def _round_to_fp16(onnx_bytes, layers, network):
    """The plan's ONNX with each FP16 layer's FP32 outputs, and the FP32 network inputs an FP16 layer
    reads, rounded through FP16 (Cast pairs), as TensorRT storing them in FP16 would."""
    import onnx
    from onnx import TensorProto, helper

    proto = onnx.load_from_string(onnx_bytes)
    graph, float32 = proto.graph, DataType.FLOAT  # noqa: F821
    produced = {t._name for layer in layers for t in layer._outputs if t._dtype == float32}
    network_inputs = {t._name for t in network._inputs if t._dtype == float32}
    read = {t._name for layer in layers for t in layer._inputs} & network_inputs
    nodes = [cast for name in sorted(read) for cast in _rounding(helper, TensorProto, name, f"{name}__fp16_in")]
    in_fp16 = {id(layer) for layer in layers}
    for node, layer in zip(graph.node, network._layers):
        if id(layer) in in_fp16:        # an FP32 layer reading the same input reads it unrounded
            node.input[:] = [f"{i}__fp16_in" if i in read else i for i in node.input]
        node.output[:] = [f"{o}__fp32" if o in produced else o for o in node.output]
        nodes.append(node)
        nodes += [cast for o in node.output if o.endswith("__fp32") and o[:-6] in produced
                  for cast in _rounding(helper, TensorProto, o, o[:-6])]
    del graph.node[:]
    graph.node.extend(nodes)
    return proto.SerializeToString()


def _rounding(helper, tensor_proto, source, target):
    half = f"{target}__fp16"
    return [helper.make_node("Cast", [source], [half], to=tensor_proto.FLOAT16, name=f"fake_trt_fp16_down_{target}"),
            helper.make_node("Cast", [half], [target], to=tensor_proto.FLOAT, name=f"fake_trt_fp16_up_{target}")]


# ---------------------------------------------------------------- runtime

class Runtime(_Api):
    def __init__(self, logger):
        self._logger = _take_logger(logger)
        self._dla_core = -1                       # as the real one: unset until DLA_core is written

    @property
    def DLA_core(self):  # noqa: N802 - real name
        return self._dla_core

    @DLA_core.setter
    def DLA_core(self, value):  # noqa: N802
        cores = _dla_cores()
        if not cores:                             # "if getNbDLACores() returns 0, this function does nothing"
            return
        if not 0 <= int(value) < cores:
            _log(self._logger, 1, f"IRuntime::setDLACore: Error Code 3: API Usage Error (Parameter check failed, "
                                  f"condition: dlaCore < getNbDLACores(); {value} of {cores} cores)")
            return
        self._dla_core = int(value)

    @property
    def num_DLA_cores(self):  # noqa: N802 - real name
        return _dla_cores()

    def deserialize_cuda_engine(self, serialized_engine):
        blob = bytes(serialized_engine)
        if not blob.startswith(_PLAN_MAGIC):
            _log(self._logger, 1, "Serialization assertion failed: magic tag does not match")
            return None
        size = struct.unpack("<I", blob[len(_PLAN_MAGIC):len(_PLAN_MAGIC) + 4])[0]
        start = len(_PLAN_MAGIC) + 4
        header = json.loads(blob[start:start + size])
        if header["version"] != __version__:
            _log(self._logger, 1, "The engine plan file is not compatible with this version of TensorRT, "
                 f"expecting library version {__version__} got {header['version']}")
            return None
        if header["cc"] != [device.gpu.major, device.gpu.minor]:
            _log(self._logger, 1, "The engine plan file is generated on an incompatible device, expecting compute "
                 f"{device.gpu.major}.{device.gpu.minor} got compute {header['cc'][0]}.{header['cc'][1]}")
            return None
        core, error = _dla.load_core(header.get("dla_core"), self._dla_core, _dla_cores())
        if error:
            _log(self._logger, 1, error)
            return None
        _loads.append({"built_for_dla_core": header.get("dla_core"), "dla_core": core})
        return ICudaEngine(header, blob[start + size:])


class ICudaEngine(_Api):
    def __init__(self, header, onnx_bytes):
        import onnxruntime as ort

        self._header = header
        self._io = [(t, True) for t in header["inputs"]] + [(t, False) for t in header["outputs"]]
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        self._session = ort.InferenceSession(onnx_bytes, options, providers=["CPUExecutionProvider"])

    num_io_tensors = property(lambda self: len(self._io))
    num_optimization_profiles = property(lambda self: len(self._header["profiles"]))

    def _find(self, name):
        return next(((t, is_input) for t, is_input in self._io if t["name"] == name), (None, None))

    def get_tensor_name(self, index):
        return self._io[index][0]["name"]

    def get_tensor_mode(self, name):
        _, is_input = self._find(name)
        return TensorIOMode.NONE if is_input is None else TensorIOMode.INPUT if is_input else TensorIOMode.OUTPUT  # noqa: F821

    def get_tensor_shape(self, name):
        return Dims(self._find(name)[0]["shape"])

    def get_tensor_dtype(self, name):
        return DataType[self._find(name)[0]["dtype"]]  # noqa: F821

    def get_tensor_profile_shape(self, name, profile_index):
        return [Dims(s) for s in self._header["profiles"][profile_index][name]]

    def _context_memory(self):
        """The device memory an execution context reserves, sized (as TensorRT's STATIC strategy) for the
        profile's largest shapes: here 4 bytes per element of every I/O tensor at those shapes."""
        largest = self._header["profiles"][0]
        batch = max(shapes[2][0] for shapes in largest.values())
        return sum(4 * int(np.prod([batch if d < 0 else d for d in t["shape"]])) for t, _ in self._io)

    def create_execution_context(self):
        """None when the device has no room for the context's memory, as the real one: it logs
        the CUDA out-of-memory error and returns None (no exception)."""
        need = self._context_memory()
        free = device.gpu.total_memory - sum(len(b) for b in device.allocations.values())
        if need > free:
            _log(_global_logger, 1, "[defaultAllocator.cpp::allocate::31] Error Code 1: Cuda Runtime (out of memory)")
            _log(_global_logger, 1, f"[executionContext.cpp::ExecutionContext::564] Error Code 2: OutOfMemory "
                                    f"(Requested size was {need} bytes.)")
            return None
        return IExecutionContext(self)


class IExecutionContext(_Api):
    def __init__(self, engine):
        self._engine, self._shapes, self._addresses = engine, {}, {}

    def set_input_shape(self, name, shape):
        _, is_input = self._engine._find(name)
        if not is_input:
            return False
        shape = tuple(int(d) for d in shape)
        low, _, high = self._engine._header["profiles"][0][name]
        if len(shape) != len(low) or any(not a <= s <= b for s, a, b in zip(shape, low, high)):
            return False          # TensorRT logs "Error Code 3: API Usage Error (Parameter check failed ...)"
        self._shapes[name] = shape
        return True

    def set_tensor_address(self, name, memory):
        if self._engine._find(name)[0] is None:
            return False
        self._addresses[name] = int(memory)
        return True

    def get_tensor_shape(self, name):
        spec, is_input = self._engine._find(name)
        if is_input:
            return Dims(self._shapes.get(name, spec["shape"]))
        batch = next(iter(self._shapes.values()), (-1,))[0]
        return Dims([batch if d < 0 else d for d in spec["shape"]])

    def execute_async_v3(self, stream_handle):
        engine = self._engine
        inputs = [t for t, is_input in engine._io if is_input]
        if any(t["name"] not in self._shapes for t in inputs) or any(t["name"] not in self._addresses for t, _ in engine._io):
            return False
        plan = [(t["name"], tuple(self.get_tensor_shape(t["name"])), np.dtype(_np_type(DataType[t["dtype"]])),  # noqa: F821
                 self._addresses[t["name"]], is_input) for t, is_input in engine._io]

        stream = int(stream_handle)

        def run():   # device.read/write: the fake's memory, or a real GPU's through cudaMemcpy (realmem.py)
            feeds = {name: device.read(addr, dt, shape, f"input '{name}'", stream)
                     for name, shape, dt, addr, is_input in plan if is_input}
            outputs = dict(zip([o.name for o in engine._session.get_outputs()], engine._session.run(None, feeds)))
            for name, shape, dt, addr, is_input in plan:
                if not is_input:
                    assert outputs[name].shape == shape, f"output '{name}' is {outputs[name].shape}, context said {shape}"
                    device.write(addr, np.ascontiguousarray(outputs[name], dtype=dt), f"output '{name}'", stream)

        if device.owner.get(int(stream_handle), device.current_device) != device.current_device:
            _log(_global_logger, 1, "IExecutionContext::enqueueV3: Error Code 1: Cuda Runtime (invalid resource "
                                    "handle): the stream belongs to another device than this thread's current one")
            return False                     # a kernel launch on another device's stream fails, as in CUDA
        device.enqueue(stream, run)
        return True
