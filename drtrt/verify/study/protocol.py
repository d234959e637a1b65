"""A validation study's protocol: written and registered before the first patient, never moved after.

The protocol is a YAML file (``docs/model-trust.md`` shows one), checked whole on load (one
:class:`ConfigError` line naming the field). Its sample size comes from a power calculation
(:func:`plan`): for each endpoint, the smallest n at which the interval the protocol names
(statsmodels' ``proportion_confint``: exact Clopper-Pearson ``beta`` or ``wilson``), computed on a
count drawn from Binomial(n, expected), has its 95 % lower bound at or above the endpoint with the
stated probability (power). That is an exact binomial power, computed with the very interval the
study is judged on, so the plan and the judgement cannot disagree on method; a normal-approximation
formula would not be (it ignores the interval's own asymmetry near 1). The power of an exact
interval is a saw-tooth in n: the n printed is the smallest that reaches the power.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
from dataclasses import dataclass
from pathlib import Path

from drtrt.config import from_dict
from drtrt.errors import BackendUnavailable, ConfigError, DataError

METHODS = {"exact": "beta", "wilson": "wilson"}     # protocol word → statsmodels' method
UNGRADABLE_RULES = ("referred", "excluded")
_MAX_N = 20000


@dataclass(frozen=True)
class Figures:
    """Proportions for the three endpoints (0-1)."""

    sensitivity: float
    specificity: float
    imageability: float


@dataclass(frozen=True)
class Power:
    """level: the probability the lower bound clears its endpoint. expected: the figures the model is
    expected to reach. prevalence: the expected share of patients with referable DR."""

    level: float
    expected: Figures
    prevalence: float


@dataclass(frozen=True)
class Protocol:
    """study: short name or ID; population: who is screened; start/end: the study period (ISO dates,
    visits on both days count); endpoints: the lower bounds the 95 % intervals must reach; ci_method:
    exact | wilson; ungradable: what a patient the model could not grade counts as for sensitivity and
    specificity — referred (the pathway sends them to a person, so a positive) or excluded (left out of
    both, counted only against imageability); power: for the sample size."""

    study: str
    population: str
    start: str
    end: str
    endpoints: Figures
    ci_method: str
    ungradable: str
    power: Power

    def __post_init__(self) -> None:
        for name in ("study", "population"):
            if not getattr(self, name).strip():
                raise ConfigError(f"protocol field '{name}' is empty")
        days = [_date(getattr(self, name), name) for name in ("start", "end")]
        if days[1] < days[0]:
            raise ConfigError(f"protocol field 'end' ({self.end}) is before 'start' ({self.start})")
        if self.ci_method not in METHODS:
            raise ConfigError(f"protocol field 'ci_method' must be one of {', '.join(METHODS)}, found {self.ci_method!r}")
        if self.ungradable not in UNGRADABLE_RULES:
            raise ConfigError(f"protocol field 'ungradable' must be one of {', '.join(UNGRADABLE_RULES)}, "
                              f"found {self.ungradable!r}")
        for name in ("sensitivity", "specificity", "imageability"):
            endpoint, expected = getattr(self.endpoints, name), getattr(self.power.expected, name)
            _open_unit(endpoint, f"endpoints.{name}")
            _open_unit(expected, f"power.expected.{name}")
            if expected <= endpoint:
                raise ConfigError(f"protocol field 'power.expected.{name}' ({expected}) must be above its endpoint "
                                  f"({endpoint}): no study size can show it")
        _open_unit(self.power.prevalence, "power.prevalence")
        if not 0.5 <= self.power.level < 1:
            raise ConfigError(f"protocol field 'power.level' must be in [0.5, 1), found {self.power.level}")


def _date(text: str, name: str) -> dt.date:
    try:
        if len(text) == 10:
            return dt.date.fromisoformat(text)
    except (TypeError, ValueError):
        pass
    raise ConfigError(f"protocol field '{name}' must be an ISO date (YYYY-MM-DD), found {text!r}")


def _open_unit(value: float, name: str) -> None:
    if not 0 < value < 1:
        raise ConfigError(f"protocol field '{name}' must be a proportion in (0, 1), found {value}")


def load_protocol(path: str | Path) -> tuple[Protocol, str]:
    """(the protocol in ``path``, the sha256 of the file's bytes); any fault is one ConfigError line."""
    import yaml

    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DataError(f"cannot read the protocol {path}: {exc.strerror or exc}") from None
    class Loader(yaml.SafeLoader):      # dates stay text: the protocol's own check names a bad one
        yaml_implicit_resolvers = {first: [r for r in found if r[0] != "tag:yaml.org,2002:timestamp"]
                                   for first, found in yaml.SafeLoader.yaml_implicit_resolvers.items()}

    try:
        raw = yaml.load(data, Loader=Loader)  # noqa: S506 - a SafeLoader without timestamps
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not YAML ({str(exc).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: a protocol is a mapping of fields, found {type(raw).__name__}")
    try:
        return from_dict(Protocol, raw), hashlib.sha256(data).hexdigest()
    except ConfigError as exc:
        raise ConfigError(f"{path}: {exc}") from None


def interval(k, n: int, method: str):
    """The two-sided 95 % interval of k successes in n (statsmodels ``proportion_confint``), ``method`` as
    the protocol names it (exact | wilson)."""
    try:
        from statsmodels.stats.proportion import proportion_confint
    except ImportError:
        raise BackendUnavailable("the study's statistics need statsmodels: pip install 'drtrt[study]'") from None
    return proportion_confint(k, n, alpha=0.05, method=METHODS[method])


def power_at(n: int, expected: float, endpoint: float, method: str) -> float:
    """P(the 95 % lower bound of X/n clears ``endpoint``) for X ~ Binomial(n, expected)."""
    import numpy as np
    from scipy.stats import binom

    k = np.arange(math.floor(endpoint * n), n + 1)
    clears = k[interval(k, n, method)[0] >= endpoint]
    return float(binom.sf(clears[0] - 1, n, expected)) if clears.size else 0.0


def n_for(expected: float, endpoint: float, level: float, method: str) -> int:
    """The smallest n whose power (:func:`power_at`) reaches ``level``."""
    for n in range(1, _MAX_N + 1):
        if power_at(n, expected, endpoint, method) >= level:
            return n
    raise ConfigError(f"no study of up to {_MAX_N} patients shows {endpoint} when {expected} is expected: "
                      "expect more, or lower the endpoint")


@dataclass(frozen=True)
class Plan:
    """What the power calculation asks for: per endpoint, the n in its denominator; and the study's minimum
    patients and referable cases."""

    referable_cases: int          # sensitivity's denominator
    non_referable_cases: int      # specificity's
    imageability_patients: int    # imageability's
    min_referable: int
    min_patients: int

    def lines(self, protocol: Protocol) -> list[str]:
        p, e = protocol.power, protocol.endpoints
        share = "" if protocol.ungradable == "referred" else (
            f", divided by the expected imageability {p.expected.imageability} (ungradable patients are excluded)")
        return [f"power calculation: exact binomial power of the {protocol.ci_method} 95% interval's lower bound "
                f"(statsmodels proportion_confint), power {p.level}",
                f"sensitivity: expected {p.expected.sensitivity} vs endpoint {e.sensitivity}: "
                f"{self.referable_cases} patients with referable DR",
                f"specificity: expected {p.expected.specificity} vs endpoint {e.specificity}: "
                f"{self.non_referable_cases} patients without",
                f"imageability: expected {p.expected.imageability} vs endpoint {e.imageability}: "
                f"{self.imageability_patients} patients",
                f"minimum: {self.min_referable} patients with referable DR and {self.min_patients} patients in all "
                f"(expected prevalence {p.prevalence}{share})"]


def plan(protocol: Protocol) -> Plan:
    p, e, method = protocol.power, protocol.endpoints, protocol.ci_method
    sens = n_for(p.expected.sensitivity, e.sensitivity, p.level, method)
    spec = n_for(p.expected.specificity, e.specificity, p.level, method)
    img = n_for(p.expected.imageability, e.imageability, p.level, method)
    gradable = p.expected.imageability if protocol.ungradable == "excluded" else 1.0
    min_referable = math.ceil(sens / gradable)
    min_patients = max(img, math.ceil(min_referable / p.prevalence),
                       math.ceil(spec / gradable / (1 - p.prevalence)))
    return Plan(sens, spec, img, min_referable, min_patients)
