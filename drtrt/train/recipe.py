"""Training configuration files: YAML in, resolved YAML out, command-line overrides on top.

Precedence, lowest first: the thesis recipe for the chosen architecture
(:data:`THESIS_RECIPES`), the ``--config`` YAML file, then ``key=value`` overrides (dotted keys
reach nested sections: ``loss.beta=0.99999``). Unknown keys anywhere are a one-line
:class:`ConfigError` naming the valid ones.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from drtrt.errors import ConfigError
from drtrt.train.train_config import TrainConfig

THESIS_RECIPES: dict[str, dict[str, Any]] = {
    # thesis §4.3: classification 100 epochs, batch 4, lr 1e-3; segmentation 300 epochs, batch 2, lr 1e-2
    "multitask": {"epochs": 100, "batch_size": 4, "lr": 1e-3},
    "vgg16": {"epochs": 100, "batch_size": 4, "lr": 1e-3},
    "unet-vgg16": {"epochs": 300, "batch_size": 2, "lr": 1e-2},
}


def read_yaml(path: str | Path) -> dict:
    """A YAML mapping from ``path`` (empty file = ``{}``)."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {str(exc).splitlines()[0]}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of config keys, found {type(data).__name__}")
    return data


def dump_yaml(cfg: TrainConfig) -> str:
    import yaml

    return yaml.safe_dump(cfg.to_dict(), sort_keys=False)


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``["loss.beta=0.99999", "augment=null"]`` → nested dict; values parsed as YAML scalars."""
    import yaml

    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"override {item!r} must look like KEY=VALUE (e.g. loss.beta=0.99999)")
        node = out
        *parents, leaf = key.strip().split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(text)
    return out


def merge(base: dict, top: dict) -> dict:
    """Recursive dict merge; ``top`` wins; a ``None`` section (e.g. ``augment: null``) replaces."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge(out[key], value)
        else:
            out[key] = value
    return out


def resolve_config(config_file: str | Path | None = None, overrides: dict[str, Any] | None = None,
                   assignments: list[str] | None = None) -> TrainConfig:
    """The training config from recipe defaults, a YAML file and overrides (see module docstring).

    ``overrides`` is a nested dict of options given as flags (``None`` values are skipped).
    """
    layered: dict[str, Any] = {}
    if config_file is not None:
        layered = merge(layered, read_yaml(config_file))
    layered = merge(layered, _drop_none(overrides or {}))
    layered = merge(layered, parse_assignments(assignments or []))
    arch = (layered.get("model") or {}).get("arch", "multitask")
    recipe = THESIS_RECIPES.get(arch, {})
    return TrainConfig.from_dict(merge(merge(TrainConfig().to_dict(), recipe), layered))


def _drop_none(d: dict) -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            value = _drop_none(value)
            if value:
                out[key] = value
        elif value is not None:
            out[key] = value
    return out


def train_overrides(model: str | None = None, width: float | None = None, batch_norm: bool | None = None,
                    image_size: int | None = None, **flat: Any) -> dict[str, Any]:
    """The everyday command-line flags as a nested override dict (``None`` = flag not given)."""
    return {**flat, "model": {"arch": model, "width": width, "batch_norm": batch_norm},
            "preprocess": {"size": image_size}}
