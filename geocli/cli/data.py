"""``geoloc data``: get datasets and weights, check them, and convert them to training formats."""

from __future__ import annotations

from geocli.cli import data_fetch, data_prepare
from geocli.cli._common import make_app

app = make_app("data", "Download, verify, convert and synthesise datasets.")
data_fetch.register(app)
data_prepare.register(app)
