"""The one batched inference loop: items → batches → one forward pass per runner → outputs.

Every stage that runs a model on many images goes through :class:`BatchedInference`: the
predictor (screening and benchmarks), evaluation, parity, golden files, the precision gates
and pseudo-labels. It fits the batch to every runner's :attr:`~drtrt.runtime.base.Runner.max_batch`
(an engine's optimisation profile), stacks each item's tensor under the model's input name,
runs every runner on the same feeds and times each forward pass. What an item is, and what
happens to the outputs, stays with the caller.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import islice
from typing import Generic, TypeVar

import numpy as np

from drtrt.errors import ConfigError
from drtrt.runtime.base import Runner

T = TypeVar("T")
Outputs = dict[str, np.ndarray]


@dataclass
class Batch(Generic[T]):
    """One forward pass: the items, each runner's outputs (batch first), each runner's seconds."""

    items: list[T]
    outputs: list[Outputs]
    seconds: list[float]

    def per_image(self, runner: int = 0) -> list[Outputs]:
        """Runner ``runner``'s outputs split per item (no batch axis)."""
        return split_outputs(self.outputs[runner], len(self.items))


def split_outputs(outputs: Mapping[str, np.ndarray], n: int) -> list[Outputs]:
    """Batched outputs → one name → array mapping per image."""
    return [{name: array[i] for name, array in outputs.items()} for i in range(n)]


class BatchedInference(Generic[T]):
    """Runs ``runners`` on batches of ``items``; ``tensor(item)`` is an item's (3, S, S) input.

    ``batch_size`` is lowered to the smallest ``max_batch`` of the runners (recorded in
    :attr:`lowered_from`), never raised. All runners must take the same input name.
    """

    def __init__(self, runners: Runner | Sequence[Runner], batch_size: int = 4,
                 tensor: Callable[[T], np.ndarray] = lambda item: item.tensor) -> None:
        self.runners = [runners] if isinstance(runners, Runner) else list(runners)
        if not self.runners:
            raise ConfigError("inference needs at least one runner")
        if batch_size < 1:
            raise ConfigError(f"batch size must be at least 1, found {batch_size}")
        names = {r.info.task.input_name for r in self.runners}
        if len(names) != 1:
            raise ConfigError(f"the models take different inputs ({', '.join(sorted(names))}); "
                              "compare models exported from the same training run")
        self.input_name = names.pop()
        limits = [r.max_batch for r in self.runners if r.max_batch is not None]
        self.batch_size = min([batch_size, *limits])
        self.lowered_from = batch_size if self.batch_size < batch_size else None
        self.tensor = tensor

    def batches(self, items: Iterable[T]) -> Iterator[list[T]]:
        iterator = iter(items)
        while chunk := list(islice(iterator, self.batch_size)):
            yield chunk

    def run(self, items: Sequence[T]) -> Batch[T]:
        """One forward pass of every runner over ``items`` (at most ``batch_size`` of them). A runner
        that only takes a larger batch (a static-batch engine: DLA) gets the batch padded with zeros;
        the padding's outputs are dropped."""
        stacked = np.stack([self.tensor(item) for item in items])
        outputs, seconds = [], []
        for runner in self.runners:
            feed = stacked
            if len(items) < runner.min_batch:
                feed = np.concatenate([stacked, np.zeros((runner.min_batch - len(items), *stacked.shape[1:]),
                                                         stacked.dtype)])
            tick = time.perf_counter()
            result = runner.infer({self.input_name: feed})
            seconds.append(time.perf_counter() - tick)
            outputs.append({name: array[:len(items)] for name, array in result.items()})
        return Batch(list(items), outputs, seconds)

    def __call__(self, items: Iterable[T]) -> Iterator[Batch[T]]:
        for chunk in self.batches(items):
            yield self.run(chunk)
