"""The screening station: a local web app a health worker runs the day with (``drtrt station``).

:mod:`.worker` screens what the camera writes (and what is uploaded) off the request path, into
the session store the CLI uses too; :mod:`.app` builds the Starlette app: its routes to
:mod:`.handlers` (pages, live updates, images by content hash), :mod:`.middleware` (login, CSRF,
security headers) and the :mod:`.state` the handlers share; :mod:`.dashboard` and :mod:`.images`
work out what the pages show; :mod:`.security` the PIN, CSRF and upload checks; :mod:`.i18n` the
operator's language. Needs the ``station`` extra (Starlette, uvicorn, Jinja2, Babel).
"""
