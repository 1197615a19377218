"""``geoloc data convert-mindrecord/synth/...``: turn datasets into training formats, or make demo data."""

from __future__ import annotations

import typer


def register(app: typer.Typer) -> None:
    """Add the commands of this module to the ``data`` group."""
