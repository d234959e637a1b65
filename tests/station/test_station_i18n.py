"""Every operator-facing string goes through gettext and every language ships complete."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from drtrt.station import i18n

pytest.importorskip("starlette", reason="the station needs the station extra (pip install 'drtrt[station]')")

pytest.importorskip("babel", reason="the station's translations need Babel (station extra)")


@pytest.mark.parametrize("language", [code for code in i18n.LANGUAGES if code != "en"])
def test_every_string_is_translated(language):
    from babel.messages.pofile import read_po

    with open(i18n.LOCALE_DIR / language / "LC_MESSAGES" / "drtrt.po", "rb") as handle:
        catalog = read_po(handle, locale=language)
    wanted = [m.id for m in i18n.catalog_template() if m.id]
    assert len(wanted) > 100
    missing = [m for m in wanted if m not in catalog or not i18n.translated(catalog[m].string)]
    assert missing == [], f"untranslated in {language}: {missing[:5]} — run scripts/station_messages.py and translate"
    for message in catalog:                           # placeholders survive translation
        if message.id and isinstance(message.id, str):
            assert sorted(re.findall(r"%\(\w+\)", message.id)) == sorted(re.findall(r"%\(\w+\)", message.string)), \
                message.id
    t = i18n.translations(language)
    assert t.gettext("not photographed — take it") != "not photographed — take it"
    assert t.ngettext("%(num)d earlier photo replaced by a retake", "%(num)d earlier photos replaced by retakes",
                      3) % {"num": 3} != "3 earlier photos replaced by retakes"


def test_templates_hold_no_untranslated_words():
    """Text between tags in the templates is inside {{ _() }} (numbers, codes and punctuation aside)."""
    loose = []
    for template in sorted((Path(i18n.__file__).parent / "templates").glob("*.html")):
        text = template.read_text()
        text = re.sub(r"{#.*?#}|{%.*?%}|{{.*?}}|<script.*?</script>|<style.*?</style>", " ", text, flags=re.S)
        for piece in re.findall(r">([^<>]+)<", text):
            words = re.findall(r"[A-Za-z]{3,}", piece)
            if set(words) - {"sha", "drtrt"}:   # identifiers, not words
                loose.append(f"{template.name}: {piece.strip()[:60]}")
    assert loose == []


def test_language_choice():
    assert i18n.pick("es", "en") == "es" and i18n.pick(None, "es-MX,es;q=0.9") == "es"
    assert i18n.pick("xx", "fr, th") == "en" and i18n.pick(None, None) == "en"
