"""Every word in the operator's language: a visit with every warning, notice and refusal the station
can show, every page and the report read in Spanish, and not one English word on them.

The check is general, so strings added later are held to it too: a page's visible text (and the
alt, title, aria-label, placeholder and confirm texts) is split into words, and a word that the
English catalogue uses but no Spanish translation does is English left on the page — whether its
string is in the catalogue untranslated, missing from it, or an English value filled into a
Spanish sentence. Patient data, numbers, codes (upper case) and file names are allowed.
"""

from __future__ import annotations

import json
import re
import shutil
from html.parser import HTMLParser

import pytest
from station_helpers import csrf_of, wait_for
from station_helpers import station  # noqa: F401  (the fixture)


pytest.importorskip("starlette", reason="the station needs the station extra (pip install 'drtrt[station]')")
pytest.importorskip("httpx", reason="Starlette's test client needs httpx (test extra)")
pytest.importorskip("babel", reason="the station's translations need Babel (station extra)")

SHOWN_ATTRIBUTES = ("alt", "title", "aria-label", "placeholder", "data-confirm-incomplete")
WORD = re.compile(r"[^\W_]+(?:'[^\W\d_]+)?")


class _Visible(HTMLParser):
    """The text a person sees (or hears from a screen reader) on an HTML page."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self._hidden = 0

    def handle_starttag(self, tag, attrs):
        if tag in ("script", "style"):
            self._hidden += 1
        self.parts += [value for name, value in attrs if value and (name in SHOWN_ATTRIBUTES
                                                                     or name.startswith("data-confirm"))]

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._hidden -= 1

    def handle_data(self, data):
        if not self._hidden:
            self.parts.append(data)


def visible_text(page: str) -> str:
    parser = _Visible()
    parser.feed(page)
    return " ".join(parser.parts)


def english_only_words(language: str, english_pages=()) -> set[str]:
    """English words that no translation into ``language`` uses: the words of the station's catalogue
    (its msgids) and of ``english_pages`` (the same pages read in English, so that a string missing from
    the catalogue counts too)."""
    from babel.messages.pofile import read_po

    from drtrt.station import i18n

    def words(texts):
        found = set()
        for text in texts:
            for piece in (text if isinstance(text, (tuple, list)) else [text]):
                code = re.sub(r"%\(\w+\)[.\d]*\w|(?<!\S)--[\w-]+", " ", piece or "")   # placeholders, --options
                found |= {w.lower() for w in WORD.findall(code)}
        return found

    with open(i18n.LOCALE_DIR / language / "LC_MESSAGES" / "drtrt.po", "rb") as handle:
        catalog = read_po(handle, locale=language)
    english = words(m.id for m in i18n.catalog_template() if m.id) | words(map(visible_text, english_pages))
    return {w for w in english - words(m.string for m in catalog if m.id) if len(w) > 1}


def english_phrases(language: str) -> set[str]:
    """The catalogue's English phrases of two words or more whose translation differs ("no DR"): found
    whole on a page, they are English even where each word is also a word of ``language``."""
    from babel.messages.pofile import read_po

    from drtrt.station import i18n

    with open(i18n.LOCALE_DIR / language / "LC_MESSAGES" / "drtrt.po", "rb") as handle:
        catalog = read_po(handle, locale=language)
    return {m.id for m in catalog if isinstance(m.id, str) and " " in m.id.strip() and "%" not in m.id
            and m.string and m.string != m.id}


def english_left(page: str, english: set[str], allowed: set[str], phrases: set[str] = frozenset()) -> list[str]:
    """English words on ``page`` (in ``english``, not upper-case codes, not in ``allowed``: patient data…),
    and English ``phrases``, each with the line it stands in."""
    text = " ".join(visible_text(page).split())
    found = [f"{p!r} in {text!r}" for p in phrases if re.search(rf"(?<!\w){re.escape(p)}(?!\w)", text)]
    for line in visible_text(page).splitlines():
        text = re.sub(r"\S+\.(?:jpe?g|png|tiff?|bmp|dcm|onnx|plan|engine)\b|(?<!\S)/\S+|(?<![\w-])--[\w-]+", " ", line,
                      flags=re.I)
        words = sorted({w for w in WORD.findall(text) if w.lower() in english and not w.isupper()
                        and w.lower() not in allowed and not any(c.isdigit() for c in w)})   # sha256, fp32
        found += [f"{w} in {' '.join(line.split())[:120]!r}" for w in words]
    return found


def _slot(client, visit_id, slot):
    return next(s for s in client.get(f"/api/visits/{visit_id}").json()["slots"] if s["slot"] == slot)


def _target(client, visit_id, token, slot):
    response = client.post(f"/visits/{visit_id}/target", data={"csrf": token, "slot": slot}, follow_redirects=False)
    assert response.status_code == 303


def test_a_spanish_visit_with_every_warning_has_no_english_word(station, fundus_photos, tmp_path):
    from drtrt.runtime.consistency import LESION_CEILING_PCT

    (tmp_path / "camera").mkdir()
    shutil.copy(fundus_photos["good3"], tmp_path / "camera" / "OLD.JPG")   # there before the start: asked about
    client, worker, camera = station(fields=2)
    client.cookies.set("lang", "es")
    token = csrf_of(client.get("/patients/new").text)
    response = client.post("/visits", data={"csrf": token, "patient": "P-0042", "name": "Ana Pérez",
                                            "birth_date": "1961-03-04", "fields": "2"}, follow_redirects=False)
    visit_id = int(response.headers["location"].rsplit("/", 1)[1])

    # a right eye's macula-centred photo from the camera into the left eye's disc slot: the other eye,
    # the other field; a blurred photo refused; the same photo again (a notice on the visit's page)
    _target(client, visit_id, token, "left/disc")
    shutil.copy(fundus_photos["good0"], camera / "IMG_0001.JPG")
    wait_for(lambda: _slot(client, visit_id, "left/disc")["state"] == "graded", what="the left disc slot")
    warnings = " ".join(_slot(client, visit_id, "left/disc")["warnings"])
    assert "eye mismatch" in warnings and "-centred" in warnings, warnings
    _target(client, visit_id, token, "right/disc")
    shutil.copy(fundus_photos["blurred"], camera / "IMG_0002.JPG")
    wait_for(lambda: _slot(client, visit_id, "right/disc")["state"] == "retake", what="the refused photo")
    shutil.copy(fundus_photos["good0"], camera / "IMG_0003.JPG")
    wait_for(lambda: worker.visit_notices(visit_id), what="the notice of a photo taken twice")
    _target(client, visit_id, token, "right/macula")
    shutil.copy(fundus_photos["good1"], camera / "IMG_0004.JPG")
    wait_for(lambda: _slot(client, visit_id, "right/macula")["state"] == "graded", what="the right macula slot")

    # heads that disagree: the left disc photo's record as a model would write it that paints every
    # lesion type over twice what any real eye shows, next to "no referable DR" (the tiny model's maps vary)
    row = next(r for r in worker.store.rows() if r.sha256 == _slot(client, visit_id, "left/disc")["sha256"])
    record = dict(row.record, grade=0, grade_name="no DR", referable=False,
                  lesions={code: dict(finding, area_fov_pct=2 * LESION_CEILING_PCT.get(code, 1.0))
                           for code, finding in row.record["lesions"].items()})
    with worker.store.transaction():
        worker.store.execute("UPDATE images SET record = ? WHERE sha256 = ?", (json.dumps(record), row.sha256))
    warnings = " ".join(_slot(client, visit_id, "left/disc")["warnings"])
    assert "a human must read this photo" in warnings, warnings
    retaken = _slot(client, visit_id, "right/macula")["sha256"]
    response = client.post(f"/visits/{visit_id}/target", data={"csrf": token, "slot": "right/macula",
                                                              "reason": "eyelid"}, follow_redirects=False)
    assert response.status_code == 303 and "error" not in response.headers["location"]    # retaken, for a reason
    shutil.copy(fundus_photos["good2"], camera / "IMG_0005.JPG")
    wait_for(lambda: _slot(client, visit_id, "right/macula")["state"] == "graded"
             and _slot(client, visit_id, "right/macula")["sha256"] != retaken, what="the retake")
    assert "OLD.JPG" in client.get("/").text

    from drtrt.station.i18n import LANGUAGES

    allowed = {"ana", "pérez", "ort", "drtrt", *(w.lower() for w in LANGUAGES.values())}   # names, "English"
    allowed |= {w.lower() for w in WORD.findall(worker.store.meta().get("model_name", ""))}
    views = [("GET", path, 200) for path in ("/", "/panel", "/patients/new", "/patients/new?q=P-00",
                                             f"/visits/{visit_id}", f"/visits/{visit_id}/panel",
                                             f"/visits/{visit_id}/report", "/actions", "/recall",
                                             "/recall?overdue=1", "/programme", "/study")]
    views += [("GET", "/recall?from=March", 400), ("GET", "/programme?from=March", 400), ("GET", "/visits/999", 404), ("GET", "/nowhere", 404), ("POST", f"/visits/{visit_id}/close", 403),
              ("POST", "/health", 405), ("GET", f"/image/{'0' * 64}/view.jpg", 404)]   # refusals
    english_pages, spanish_pages = _read(client, views, "en"), _read(client, views, "es")

    client.cookies.set("lang", "es")
    assert client.post(f"/visits/{visit_id}/close", data={"csrf": token}, follow_redirects=False).status_code == 303
    closed = [("GET", path, 200) for path in ("/", f"/visits/{visit_id}", f"/visits/{visit_id}/report", "/actions")]
    english_pages.update({f"closed {k}": v for k, v in _read(client, closed, "en").items()})
    spanish_pages.update({f"closed {k}": v for k, v in _read(client, closed, "es").items()})

    guarded, _, _ = station(pin="4821", data=tmp_path / "guarded")          # the login page, a wrong PIN
    for language, pages in (("en", english_pages), ("es", spanish_pages)):
        guarded.cookies.set("lang", language)
        pages["/login"] = login = guarded.get("/login").text
        pages["wrong PIN"] = guarded.post("/login", data={"csrf": csrf_of(login), "pin": "0000"}).text

    english, phrases = english_only_words("es", english_pages.values()), english_phrases("es")
    assert "no DR" in phrases
    assert {"eye", "mismatch", "photo", "retake", "found", "human"} <= english
    for name, page in spanish_pages.items():
        assert 'lang="es"' in page or "<html" not in page, name                # a panel is a fragment
        found = english_left(page, english, allowed, phrases)
        assert found == [], f"{name}: {found}"
    panel = visible_text(spanish_pages[f"/visits/{visit_id}/panel"])
    assert "discordancia de ojo" in panel and "centrada en" in panel and "una persona debe leer" in panel, panel
    assert "Borrosa" in panel and "ya está en la visita" in panel and "el párpado" in panel


def _read(client, views, language: str) -> dict[str, str]:
    """Each (method, path, status) of ``views`` read in ``language``: path → page."""
    client.cookies.set("lang", language)
    pages = {}
    for method, path, status in views:
        response = client.request(method, path, follow_redirects=False)
        assert response.status_code == status, (method, path, response.status_code)
        pages[path] = response.text
    return pages


def test_the_check_finds_english_left_on_a_page():
    """The check itself: an old record's English warning on a Spanish page is found."""
    english = english_only_words("es", ['<p>eye mismatch: recorded as the right eye</p>'])
    page = ('<p lang="es">Ojo derecho (OD) · P-0042 · IMG_0001.JPG · EX · 12,5 %</p>'
            '<p class="warn">⚠ eye mismatch: recorded as the right eye</p><img alt="left eye">')
    assert {w.split()[0] for w in english_left(page, english, set())} == \
        {"as", "eye", "mismatch", "recorded", "right", "the", "left"}
    assert english_left(page.split('<p class="warn">')[0], english, set()) == []
    assert english_left("<p>grado 0: no DR</p>", english, set(), english_phrases("es")) != []   # "no", "DR"
