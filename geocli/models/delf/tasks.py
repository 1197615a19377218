"""DELF's inference tasks (extraction, match, retrieve, eval, demo) as a mixin of the DELF backend.

Kept apart from ``backend.py`` (network and training) so the two halves of the backend read on their own.
"""

from __future__ import annotations


class DelfTasks:
    """evaluate / match / retrieve / demo of :class:`geocli.models.delf.backend.DelfBackend`."""
