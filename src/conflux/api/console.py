"""The web console at ``/ui/``: a small static app (plain JavaScript modules, no build step)
that reads and writes through the REST routes with the signed-in caller's credentials, so it
adds no second path to the engine (docs/console.md).

Its files are served with a Content-Security-Policy that allows scripts, styles and requests
from the daemon itself only: no inline script, no other origin, no framing. Every value a
user wrote (entity names, values, intents) is put into the page as text, never as markup.
"""

from __future__ import annotations

import os

from conflux.errors import NotFound

_DIR = os.path.join(os.path.dirname(__file__), "console_files")
_TYPES = {".html": "text/html; charset=utf-8", ".js": "text/javascript; charset=utf-8",
          ".css": "text/css; charset=utf-8", ".svg": "image/svg+xml"}
_POLICY = ("default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
           "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")


class Console:
    """``GET /ui`` (the app) and ``GET /ui/{name}`` (its files); no credentials needed for
    the files themselves: every piece of data they show is a REST call that needs them."""

    auth = False

    def __init__(self):
        self.files = {}
        for name in os.listdir(_DIR):
            ext = os.path.splitext(name)[1]
            if ext in _TYPES:
                with open(os.path.join(_DIR, name), "rb") as handle:
                    self.files[name] = (handle.read(), _TYPES[ext])

    async def on_get(self, req, resp, name: str = "index.html"):
        found = self.files.get(name)
        if found is None:
            raise NotFound(f"the console has no file {name[:80]!r}")
        resp.data, resp.content_type = found
        resp.set_header("Content-Security-Policy", _POLICY)
        resp.set_header("X-Content-Type-Options", "nosniff")
        resp.set_header("Referrer-Policy", "no-referrer")
        resp.set_header("Cache-Control", "no-cache")
