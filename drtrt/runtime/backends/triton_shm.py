"""System shared memory between a ``triton://`` client and a server on the same host.

Over the wire every request serialises the input (a 512² image: 3 MB of float32) and every answer the
outputs (the 5×512² lesion map: 5 MB) into protobuf or HTTP bodies and out again. With system shared
memory the client writes the batch into a POSIX shared-memory region the server has registered and
reads the outputs from another; the request carries only the regions' names and offsets.

One :class:`Regions` per client thread (its input region and its output region), registered through
that thread's connection, grown when a larger batch needs it, unregistered and unlinked when the
connection is dropped or the runner closes. :func:`shm_mode` reads the URL's ``?shm=auto|on|off``.
"""

from __future__ import annotations

import itertools
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np

from drtrt.errors import ConfigError, DrtrtError

_log = logging.getLogger("drtrt.triton")     # the CLI prints its warnings on stderr

MODES = ("auto", "on", "off")
EXTENSION = "system_shared_memory"           # what the server lists in its metadata when it supports it
_ALIGN = 64
_CANARY = 16                                 # random bytes at each end of an output's place
_serial = itertools.count()


def shm_mode(query: str, url: str) -> str:
    """``auto`` (shared memory where the server is on this host and supports it), ``on`` or ``off``, from a
    URL's query (``?shm=off``); anything else in the query is an error."""
    mode = "auto"
    for item in filter(None, query.split("&")):
        key, _, value = item.partition("=")
        if key != "shm" or value not in MODES:
            raise ConfigError(f"{url}: unknown option '{item}' (the only one is shm=auto|on|off)")
        mode = value
    return mode


def choose(address: Any, local: bool, client: Any, output_specs: Mapping[str, tuple[tuple[int, ...], np.dtype]],
           transient: Callable[[Exception], bool]) -> Any:
    """tritonclient's shared-memory helpers where requests should go through system shared memory
    (``?shm=on``; ``auto``: a server on this host, ``local``, that lists the extension), else None (the
    wire, with one log line saying why). ``transient(exc)``: a failure the caller retries."""
    if address.shm == "off" or (address.shm == "auto" and not local):
        return None
    if any(d < 0 for dims, _ in output_specs.values() for d in dims):
        return no_shm(address, "the model's outputs have dynamic dimensions")
    try:
        grpc = address.protocol == "grpc"
        metadata = client.get_server_metadata(as_json=True) if grpc else client.get_server_metadata()
        supported = EXTENSION in (metadata or {}).get("extensions", [])
    except Exception as exc:  # noqa: BLE001 - an old server or a proxy that does not answer metadata
        if transient(exc):
            raise
        supported = False
    if not supported:
        return no_shm(address, "the server does not list system shared memory")
    try:
        import tritonclient.utils.shared_memory as shm           # a C library: Linux only
    except (ImportError, OSError) as exc:
        return no_shm(address, f"tritonclient's shared-memory library cannot load ({exc})")
    return shm


def no_shm(address: Any, reason: str) -> None:
    """The wire instead, said in one log line; with ``?shm=on`` one-line error instead."""
    if address.shm == "on":
        raise ConfigError(f"{address.url}: shared memory was asked for (?shm=on) but {reason}; "
                          "use ?shm=off or leave it out")
    _log.warning(f"{address.url}: requests go over the wire, not shared memory: {reason}")
    return None


def _output_shape(result: Any, name: str) -> list[int]:
    """An output's shape as the response gives it (an output in shared memory has no data of its own):
    gRPC's protobuf message (its ``as_json=True`` returns None in tritonclient 2.x), HTTP's dict."""
    output = result.get_output(name)
    if output is None:
        raise DrtrtError(f"the server's answer has no output '{name}'")
    return [int(d) for d in (output.get("shape", []) if isinstance(output, dict) else output.shape)]


def _aligned(size: int) -> int:
    return -(-size // _ALIGN) * _ALIGN


class _Region:
    """One registered region: its server-side name, POSIX key, handle and size."""

    def __init__(self, shm: Any, client: Any, size: int) -> None:
        tag = f"drtrt_{os.getpid()}_{next(_serial)}_{uuid.uuid4().hex[:8]}"
        self.name, self.key, self.size = tag, f"/{tag}", size
        self.handle = shm.create_shared_memory_region(self.name, self.key, size, create_only=True)   # mode 0600
        try:
            client.register_system_shared_memory(self.name, self.key, size)
        except Exception:
            shm.destroy_shared_memory_region(self.handle)
            raise

    def close(self, shm: Any, client: Any) -> None:
        """Unregistered, then unlinked. Triton releases a request a moment after it answers it, and until
        then refuses to unregister the input region ("currently in use"): asked again, up to ~2 s."""
        for wait in (0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.4, 0.6, 0.8, None):
            try:
                client.unregister_system_shared_memory(self.name)
                break
            except Exception as exc:  # noqa: BLE001 - a server that went away forgot it anyway
                if wait is None or "in use" not in str(exc):
                    break
                time.sleep(wait)
        shm.destroy_shared_memory_region(self.handle)        # unlinks the key


class Regions:
    """One client thread's input and output regions."""

    def __init__(self, shm: Any, client: Any) -> None:
        self.shm, self.client = shm, client
        self.inputs: _Region | None = None
        self.outputs: _Region | None = None
        self.canaries: dict[str, list[tuple[int, np.ndarray]]] = {}

    def _fit(self, which: str, size: int) -> _Region:
        """``which`` region (inputs | outputs), replaced by a larger one where ``size`` bytes do not fit."""
        region = getattr(self, which)
        if region is not None and region.size >= size:
            return region
        setattr(self, which, None)                 # never left naming a region that is gone
        if region is not None:
            region.close(self.shm, self.client)
        region = _Region(self.shm, self.client, max(_ALIGN, size))
        setattr(self, which, region)
        return region

    def request(self, module: Any, feeds: Mapping[str, np.ndarray], wire: Mapping[str, str],
                outputs: Sequence[tuple[str, tuple[int, ...], np.dtype]]) -> tuple[list, list, list]:
        """Inputs written into this thread's input region, outputs placed in its output region: the
        request's InferInputs, InferRequestedOutputs and where each output lies (name, offset, dtype, shape).
        Each output's place starts and ends with fresh random bytes (a canary) that the server's answer must
        overwrite: Triton's answer does not say where it wrote, and the region holds the previous answer."""
        arrays = [np.ascontiguousarray(array) for array in feeds.values()]
        offsets = list(itertools.accumulate((_aligned(a.nbytes) for a in arrays), initial=0))
        self._fit("inputs", offsets[-1])
        sizes = [_aligned(int(np.prod(shape)) * dtype.itemsize) for _, shape, dtype in outputs]
        places = list(itertools.accumulate(sizes, initial=0))
        self._fit("outputs", places[-1])
        tensors = []
        for (name, array), offset in zip(zip(feeds, arrays), offsets):
            self.shm.set_shared_memory_region(self.inputs.handle, [array], offset=offset)
            tensor = module.InferInput(name, list(array.shape), wire[name])
            tensor.set_shared_memory(self.inputs.name, array.nbytes, offset)
            tensors.append(tensor)
        wanted, where = [], []
        self.canaries = {}
        for (name, shape, dtype), offset, size in zip(outputs, places, sizes):
            tensor = module.InferRequestedOutput(name)
            tensor.set_shared_memory(self.outputs.name, size, offset)
            wanted.append(tensor)
            where.append((name, offset, dtype, shape))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            ends = [(0, nbytes)] if nbytes <= 2 * _CANARY else [(0, _CANARY), (nbytes - _CANARY, _CANARY)]
            self.canaries[name] = [(offset + at, np.frombuffer(os.urandom(n), np.uint8)) for at, n in ends]
            for at, canary in self.canaries[name]:
                self.shm.set_shared_memory_region(self.outputs.handle, [canary], offset=at)
        return tensors, wanted, where

    def written(self, name: str) -> bool:
        """Whether the server overwrote each of output ``name``'s canaries (a model that really produced
        those random bytes is refused too: the safe side, and about as likely as guessing a key)."""
        return not any(np.array_equal(self.shm.get_contents_as_numpy(self.outputs.handle, np.uint8, [len(c)], at), c)
                       for at, c in self.canaries.get(name, []))

    def outputs_of(self, result: Any, where: Sequence[tuple], url: str) -> dict[str, np.ndarray]:
        """The answer's outputs, copied out of the region (the next request reuses it); an output whose
        canaries the server left, or whose shape is not the one asked for, stops the request."""
        outputs = {}
        for name, offset, dtype, expected in where:
            shape = _output_shape(result, name)
            if tuple(shape) != tuple(expected) or not self.written(name):   # never what an earlier answer left
                raise DrtrtError(f"{url} did not write output '{name}' {tuple(expected)} into this client's shared "
                                 f"memory (it answered {tuple(shape)}): where Triton's Python backend stub (built "
                                 "against NumPy 1) runs under NumPy 2, install numpy<2 in the server's Python "
                                 "(deploy/serving.md); else use ?shm=off")
            outputs[name] = np.array(self.shm.get_contents_as_numpy(self.outputs.handle, dtype, list(shape), offset))
        return outputs

    def close(self) -> None:
        for region in (self.inputs, self.outputs):
            if region is not None:
                region.close(self.shm, self.client)
        self.inputs = self.outputs = None


class PerThread:
    """Each client thread's :class:`Regions`, made on its first request through its connection."""

    def __init__(self, shm: Any) -> None:
        self.shm, self.disabled = shm, False
        self._local = threading.local()
        self._all: list[Regions] = []
        self._lock = threading.Lock()

    def regions(self, client: Any) -> Regions | None:
        """This thread's regions (None once the server refused them)."""
        if self.disabled:
            return None
        regions = getattr(self._local, "regions", None)
        if regions is None:
            regions = self._local.regions = Regions(self.shm, client)
            with self._lock:
                self._all.append(regions)
        return regions

    def refused(self) -> None:
        """The server refused a region: this thread's are closed, and no thread makes new ones."""
        self.disabled = True
        self.forget()

    def forget(self) -> None:
        """This thread's regions unregistered and unlinked (its connection is being dropped)."""
        regions = getattr(self._local, "regions", None)
        self._local.regions = None
        if regions is not None:
            with self._lock:
                if regions in self._all:
                    self._all.remove(regions)
            regions.close()

    def close(self) -> None:
        with self._lock:
            every, self._all = self._all, []
        for regions in every:
            regions.close()
        self._local = threading.local()
