"""What a visit is made of: the protocol (the photos it asks for), its slots as read, the visit as
read, and why a graded photo is retaken (:mod:`.visits` keeps them in the session store)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from drtrt.clinic.patients import EYES, Patient
from drtrt.clinic.store import SessionRow
from drtrt.clinic.verdicts import EyeVerdict
from drtrt.errors import ConfigError

FIELDS = {1: ("any",), 2: ("disc", "macula")}
# why a graded photo is retaken (captures.reason holds the code, or "other: <the operator's words>")
RETAKE_REASONS = ("blurred", "wrong_field", "eyelid", "reflection", "other")
MAX_REASON = 120
REFUSED = ("ungradable", "error")                 # a failed try: the photo could not be graded or read


def retake_reason(choice: str | None, text: str | None = None) -> str:
    """The reason kept for a retake: one of :data:`RETAKE_REASONS`; ``other`` needs the operator's words."""
    choice = (choice or "").strip()
    if choice not in RETAKE_REASONS:
        raise ConfigError("say why this photo is retaken")
    if choice != "other":
        return choice
    words = " ".join((text or "").split())
    if not words or len(words) > MAX_REASON or not words.isprintable():
        raise ConfigError("say in a few words why this photo is retaken")
    return f"other: {words}"


class PatientConflict(ConfigError):
    """Registering an ID already registered with another name or date of birth: the patient as registered."""

    def __init__(self, patient: Patient) -> None:
        super().__init__(f"patient {patient.id} is registered with another name or date of birth")
        self.patient = patient


@dataclass(frozen=True)
class Protocol:
    """The photos a visit needs: ``fields`` per eye (1: any field; 2: disc- and macula-centred)."""

    fields: int = 1

    def __post_init__(self) -> None:
        if self.fields not in FIELDS:
            raise ConfigError(f"a protocol takes 1 or 2 fields per eye, found {self.fields}")

    @property
    def slots(self) -> tuple[str, ...]:
        return tuple(f"{eye}/{name}" for eye in EYES for name in FIELDS[self.fields])

    def to_json(self) -> str:
        return json.dumps({"fields": self.fields})

    @classmethod
    def from_json(cls, text: str) -> Protocol:
        return cls(int(json.loads(text)["fields"]))


@dataclass
class Slot:
    """One photo the protocol asks for, and the capture filling it (None: not photographed)."""

    name: str                                  # right/disc, left/any, …
    state: str                                 # missing | screening | graded | retake
    row: SessionRow | None = None
    sha256: str | None = None                  # the photo filling the slot (also while it is screened)
    capture_id: int | None = None
    taken: str | None = None
    replaced: list[dict] = field(default_factory=list)   # earlier captures of this slot, newest first (see _slot)
    warnings: list[str] = field(default_factory=list)
    reason: str | None = None                  # why the photo filling it was retaken (retake_reason)
    moved_from: str | None = None              # "visit N eye/field": where a moved photo came from
    tries: int = 0                             # refused photos of this slot's eye in the visit
    escalation: str | None = None              # the pathway's escalation words (%(tries)d) once tries are many

    @property
    def eye(self) -> str:
        return self.name.split("/")[0]

    @property
    def field_name(self) -> str:
        return self.name.split("/")[1]


@dataclass
class Visit:
    id: int
    patient: Patient
    protocol: Protocol
    opened: str
    closed: str | None
    slots: list[Slot]
    eyes: dict[str, EyeVerdict]
    verdict: str                               # the patient's verdict from the photos so far (verdicts.VERDICTS)
    closed_verdict: str | None                 # what it closed with
    target: str | None                         # the slot the next photo fills (None: all filled)
    words: str = ""                            # the verdict in the pathway's words
    closed_words: str | None = None
    provisional: bool = True                   # the model has no validation record: every verdict is provisional
    model_verdict: str | None = None           # the model's verdict (closed, else so far), kept beside a read's
    model_words: str | None = None
    reading: Any = None                        # a drtrt.clinic.reads.ReadState: the clinicians' reads (None: none)

    @property
    def complete(self) -> bool:
        """Every slot has a screened photo that is graded, or refused after the operator saw it."""
        return all(slot.state in ("graded", "retake") for slot in self.slots)

    @property
    def waiting(self) -> bool:
        return self.closed is None and any(slot.state in ("missing", "screening", "retake") for slot in self.slots)
