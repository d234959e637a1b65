"""The task vocabulary: what the model's outputs mean, in one place.

A :class:`TaskSpec` names the DR grades, the lesion classes (codes and long names, in
label-map order), the referable threshold, and the model's input and output tensor names.
Training builds it from the model config (:func:`drtrt.train.model.task_spec`), the checkpoint
and the ONNX metadata carry it, and every later stage reads it from ``runner.info.task``:
post-processing, reports, metrics, the CLI and the IDRiD reader. Nothing else in drtrt
defines a grade name, a lesion code or an output name.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from drtrt.errors import ConfigError


@dataclass(frozen=True)
class TaskSpec:
    """DR grading plus lesion segmentation, as thesis §3 defines it (SPEC §1).

    grade_names: one name per grade, index = grade (0 no DR … 4 proliferative DR).
    lesion_codes / lesion_long_names: lesion classes in label-map order; label value
        ``i + 1`` is ``lesion_codes[i]`` (0 is background).
    referable_min_grade: referable DR is grade >= this (ICDR: moderate NPDR or worse).
    input_name: the image input tensor. grade_output / lesion_output: the logits tensors;
        None when the model has no such head (the thesis's single-task baselines).
    """

    grade_names: tuple[str, ...] = ("no DR", "mild NPDR", "moderate NPDR", "severe NPDR", "proliferative DR")
    lesion_codes: tuple[str, ...] = ("EX", "SE", "MA", "HE")
    lesion_long_names: tuple[str, ...] = ("hard exudates", "soft exudates", "microaneurysms", "haemorrhages")
    referable_min_grade: int = 2
    input_name: str = "image"
    grade_output: str | None = "grade_logits"
    lesion_output: str | None = "lesion_logits"

    def __post_init__(self) -> None:
        if len(self.lesion_codes) != len(self.lesion_long_names) or len(set(self.lesion_codes)) != len(self.lesion_codes):
            raise ConfigError(f"task: {len(self.lesion_codes)} distinct lesion codes need as many long names, "
                              f"found {self.lesion_codes} and {self.lesion_long_names}")
        if not self.grade_names or not 0 < self.referable_min_grade < len(self.grade_names):
            raise ConfigError(f"task: referable_min_grade must name a grade above 0 of {len(self.grade_names)}, "
                              f"found {self.referable_min_grade}")
        if not (self.grade_output or self.lesion_output) or self.grade_output == self.lesion_output:
            raise ConfigError(f"task: a model needs a grade or a lesion output (distinct names), found "
                              f"{self.grade_output!r} and {self.lesion_output!r}")

    @property
    def lesion_names(self) -> tuple[str, ...]:
        """Class names of the lesion label map, index = label value: ``("background", "EX", …)``."""
        return ("background", *self.lesion_codes)

    @property
    def n_grades(self) -> int:
        return len(self.grade_names)

    @property
    def n_lesion_classes(self) -> int:
        """Lesion classes including the background."""
        return len(self.lesion_codes) + 1

    @property
    def outputs(self) -> tuple[str, ...]:
        """The model's output tensors, grade first."""
        return tuple(name for name in (self.grade_output, self.lesion_output) if name)

    def long_name(self, code: str) -> str:
        return self.lesion_long_names[self.lesion_codes.index(code)]

    def label(self, code: str) -> int:
        """Label-map value of lesion ``code`` (1-based; 0 is background)."""
        return self.lesion_codes.index(code) + 1

    def is_referable(self, grade: int) -> bool:
        return grade >= self.referable_min_grade

    def with_heads(self, grade: bool, lesion: bool) -> TaskSpec:
        """This vocabulary for a model with only some of the heads (the baselines)."""
        default = TaskSpec()
        return replace(self, grade_output=(self.grade_output or default.grade_output) if grade else None,
                       lesion_output=(self.lesion_output or default.lesion_output) if lesion else None)

    def to_dict(self) -> dict[str, Any]:
        from drtrt.config import to_dict

        return to_dict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskSpec:
        from drtrt.config import from_dict

        return from_dict(cls, data, where="task.")
