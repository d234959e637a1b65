"""Record the public surface of cuda-python's runtime module (``cuda.bindings.runtime``) as JSON.

cuda-python imports without a GPU or driver (its calls then return
``cudaErrorInsufficientDriver``), so the real module is imported and only names,
first docstring lines (Cython signatures), enum members and ``cudaDeviceProp`` fields are
recorded. Made with:

    pip install --no-deps --target /tmp/cb cuda-bindings==12.9.* cuda-python==12.9.*
    PYTHONPATH=/tmp/cb python tests/fake_tensorrt/extract_cuda_surface.py > tests/fake_tensorrt/surface/cuda-bindings-12.9.json
"""

from __future__ import annotations

import enum
import json
import sys
from importlib import metadata


def extract() -> dict:
    from cuda.bindings import runtime as rt

    functions, enums, classes = {}, {}, {}
    for name in sorted(dir(rt)):
        if name.startswith("_"):
            continue
        value = getattr(rt, name)
        if isinstance(value, type) and (issubclass(value, enum.Enum) or hasattr(value, "__members__")):
            enums[name] = sorted(value.__members__)
        elif isinstance(value, type):
            classes[name] = sorted(a for a in dir(value) if not a.startswith("_"))
        elif callable(value):
            functions[name] = ((value.__doc__ or "").strip().splitlines() or [""])[0]
    return {"version": metadata.version("cuda-bindings"), "module": "cuda.bindings.runtime",
            "source": {"package": "cuda-bindings", "method": "real module imported without a GPU "
                       "(tests/fake_tensorrt/extract_cuda_surface.py)"},
            "functions": functions,
            "enums": {k: v for k, v in enums.items() if k in ("cudaError_t", "cudaMemcpyKind")},
            "classes": {k: v for k, v in classes.items() if k in ("cudaDeviceProp", "cudaStream_t")}}


if __name__ == "__main__":
    json.dump(extract(), sys.stdout, indent=1, sort_keys=True)
    sys.stdout.write("\n")
