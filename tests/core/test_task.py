"""The core's records: the task vocabulary, the model info that carries it, the one dict parser."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pytest

from drtrt.config import from_dict, to_dict
from drtrt.errors import ArtefactError, ConfigError
from drtrt.model_info import ModelInfo
from drtrt.preprocess import PreprocessSpec
from drtrt.task import TaskSpec


def test_the_vocabulary_and_its_derived_names():
    task = TaskSpec()
    assert task.lesion_names == ("background", "EX", "SE", "MA", "HE") and task.n_lesion_classes == 5
    assert task.outputs == ("grade_logits", "lesion_logits") and task.input_name == "image"
    assert task.label("MA") == 3 and task.long_name("HE") == "haemorrhages"
    assert task.is_referable(2) and not task.is_referable(1)
    assert task.with_heads(grade=True, lesion=False).outputs == ("grade_logits",)
    assert task.with_heads(grade=False, lesion=True).with_heads(grade=True, lesion=True).outputs == task.outputs


@pytest.mark.parametrize("change, message", [
    ({"lesion_long_names": ("one",)}, "need as many long names"),
    ({"lesion_codes": ("EX", "EX", "MA", "HE")}, "distinct lesion codes"),
    ({"referable_min_grade": 5}, "referable_min_grade"),
    ({"grade_output": None, "lesion_output": None}, "needs a grade or a lesion output"),
])
def test_an_inconsistent_vocabulary_is_refused(change, message):
    with pytest.raises(ConfigError, match=message):
        replace(TaskSpec(), **change)


def test_model_info_carries_the_task_and_reads_older_models():
    task = replace(TaskSpec(), grade_names=("R0", "R1", "R2", "R3", "R4"))
    info = ModelInfo(PreprocessSpec(size=64), task=task, precision="int8", extra=(("calibration_method", "minmax"),))
    meta = info.to_metadata()
    assert json.loads(meta["drtrt.task"])["grade_names"][0] == "R0"
    assert ModelInfo.from_metadata(meta) == info
    legacy = {"drtrt.schema": "drtrt-model/1", "drtrt.preprocess": meta["drtrt.preprocess"],
              "drtrt.grade_names": json.dumps(list(TaskSpec().grade_names)),
              "drtrt.lesion_names": json.dumps(["background", "EX", "SE", "MA", "HE"]), "drtrt.precision": "fp32"}
    old = ModelInfo.from_metadata(legacy)
    assert old.task == TaskSpec() and old.extra == ()      # the old name keys are not left behind as extras
    with pytest.raises(ArtefactError, match="no drtrt metadata"):
        ModelInfo.from_metadata({})
    with pytest.raises(ArtefactError, match="damaged drtrt metadata"):
        ModelInfo.from_metadata({**meta, "drtrt.task": json.dumps({"lesion_codes": ["EX"]})})


@dataclass(frozen=True)
class _Inner:
    size: tuple[int, int]
    scale: float = 1.0


@dataclass(frozen=True)
class _Outer:
    name: str
    inner: _Inner
    items: tuple[_Inner, ...] = ()
    note: str | None = None


def test_one_parser_coerces_what_is_lossless_and_refuses_the_rest():
    data = {"name": "x", "inner": {"size": [3, 4], "scale": 2}, "items": [{"size": [1, 2]}]}
    parsed = from_dict(_Outer, data)
    assert parsed == _Outer("x", _Inner((3, 4), 2.0), (_Inner((1, 2)),)) and isinstance(parsed.inner.scale, float)
    assert from_dict(_Outer, to_dict(parsed)) == parsed
    with pytest.raises(ConfigError, match="unknown config key 'inner.sizes' \\(did you mean 'size'\\?\\)"):
        from_dict(_Outer, {"name": "x", "inner": {"sizes": [1, 2]}})
    with pytest.raises(ConfigError, match="'inner.size' must hold 2 values"):
        from_dict(_Outer, {"name": "x", "inner": {"size": [1, 2, 3]}})
    with pytest.raises(ConfigError, match="'items\\[0\\].size\\[1\\]' must be int"):
        from_dict(_Outer, {"name": "x", "inner": {"size": [1, 2]}, "items": [{"size": [1, "2"]}]})
    with pytest.raises(ConfigError, match="invalid _Outer"):
        from_dict(_Outer, {"name": "x"})                   # a required key missing


def test_every_record_round_trips_through_the_parser():
    from drtrt.preprocess import FieldOfView, Geometry

    spec = PreprocessSpec(size=128, margin=0.1)
    assert PreprocessSpec.from_dict(json.loads(json.dumps(spec.to_dict()))) == spec
    geometry = Geometry.from_fov(FieldOfView(10.5, 20.0, 8.0, True), (40, 60), 32)
    assert Geometry.from_dict(json.loads(json.dumps(geometry.to_dict()))) == geometry
    assert TaskSpec.from_dict(json.loads(json.dumps(TaskSpec().to_dict()))) == TaskSpec()
    with pytest.raises(ConfigError, match="invalid preprocessing: size 4 \\(needs an integer >= 8\\)"):
        PreprocessSpec(size=4)
