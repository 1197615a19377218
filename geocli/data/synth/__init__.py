"""Small, learnable datasets written in the real on-disk formats, for demos and end-to-end tests.

Each generator renders or draws its data with NumPy/OpenCV only (no MindSpore), writes it exactly as
the real dataset is laid out, so the same parser, converter and training code run on it, and skips the
work when the requested dataset is already there.
"""

import json
from dataclasses import asdict
from pathlib import Path
from typing import Any, Optional


def marker_state(marker: Path, spec: Any) -> Optional[str]:
    """What a generator's marker file says about its folder: 'done' (this spec, completed), 'other'
    (ours, another spec or interrupted), 'foreign' (unreadable: not ours), or None when there is no
    marker (the caller then decides from the folder's own files)."""
    if not Path(marker).is_file():
        return None
    try:
        saved = json.loads(Path(marker).read_text(encoding="utf-8"))
    except ValueError:
        return "foreign"
    return "done" if saved.get("spec") == asdict(spec) and saved.get("complete") else "other"
