"""Extract the station's operator-facing strings into drtrt/station/locale/drtrt.pot and merge them
into every language's drtrt.po (Babel): run after changing a template or a translated string, then
translate what is new (``msgstr ""``). tests/station/test_station_i18n.py fails while anything is untranslated.

    PYTHONPATH=. .venv/bin/python scripts/station_messages.py
"""

from __future__ import annotations

from babel.messages.catalog import Catalog
from babel.messages.pofile import read_po, write_po

from drtrt.station.i18n import LANGUAGES, LOCALE_DIR, catalog_template, translated


def main() -> None:
    pot = catalog_template()
    with open(LOCALE_DIR / "drtrt.pot", "wb") as handle:
        write_po(handle, pot, sort_output=True, omit_header=True, no_location=True)
    for language in LANGUAGES:
        if language == "en":
            continue
        path = LOCALE_DIR / language / "LC_MESSAGES" / "drtrt.po"
        if path.exists():
            with open(path, "rb") as handle:
                catalog = read_po(handle, locale=language)
        else:
            catalog = Catalog(locale=language, domain="drtrt")
        catalog.update(pot, no_fuzzy_matching=True)
        with open(path, "wb") as handle:
            write_po(handle, catalog, sort_output=True, omit_header=True, ignore_obsolete=True, no_location=True)
        missing = [m.id for m in catalog if m.id and not translated(m.string)]
        print(f"{language}: {len(catalog)} messages, {len(missing)} untranslated")


if __name__ == "__main__":
    main()
