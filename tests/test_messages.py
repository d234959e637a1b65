"""Text built with values stays translatable: a Message is its English text and its template, a
record keeps both, and a record written before keeps reading (in English)."""

from __future__ import annotations

import json

import pytest

from drtrt.clinic.store import SessionRow
from drtrt.messages import Message, from_record, message, to_record
from drtrt.preprocess.disc import eye_mismatch
from drtrt.runtime.predictor import ScreeningResult


def test_a_message_is_its_english_text_and_its_template():
    warning = eye_mismatch("right", "left")
    assert isinstance(warning, Message) and warning.startswith("eye mismatch: recorded as the right eye")
    assert "%(recorded)s" in warning.template and warning.values == {"recorded": "right", "implied": "left"}
    assert json.dumps([warning]) == json.dumps([str(warning)])          # every reader gets the text as before


def test_a_record_keeps_the_template_and_an_old_record_still_reads():
    warnings = [message("the lesion map paints %(pct).0f%% of the field as %(code)s", pct=31.2, code="SE"), "plain"]
    record = json.loads(json.dumps(ScreeningResult("a.jpg", "graded", warnings=warnings).to_dict()))
    assert record["warnings"] == ["the lesion map paints 31% of the field as SE", "plain"]
    read = from_record(record)
    assert read == record["warnings"] and read[0].values == {"pct": 31.2, "code": "SE"}
    assert SessionRow("a.jpg", "0" * 64, None, None, "graded", None, record).warnings[0].template == warnings[0].template
    old = {"warnings": ["eye mismatch: recorded as the right eye"]}                 # written before templates
    assert from_record(old) == old["warnings"] and not isinstance(from_record(old)[0], Message)
    assert "warning_messages" not in to_record(["plain"])
    broken = {"warnings": ["x"], "warning_messages": [{"text": "%(gone)s", "values": {}}]}
    assert from_record(broken) == ["x"]                          # a template its values cannot fill: the text


def test_the_station_translates_the_template_and_its_words():
    pytest.importorskip("babel", reason="the station's translations need Babel (station extra)")
    from drtrt.station.i18n import translate, translations

    spanish = translations("es")
    assert translate(spanish, eye_mismatch("right", "left")).startswith(
        "discordancia de ojo: registrada como ojo derecho, pero el disco óptico está en el lado izquierdo")
    old = "eye mismatch: recorded as the right eye, but …"
    assert translate(spanish, old) == old                             # an old record: English, as it was
    assert translate(translations("en"), eye_mismatch("left", "right")) == eye_mismatch("left", "right")
