"""geoloc: five geo-localization and image-retrieval models behind one command, on MindSpore.

Importing this package is cheap on purpose: MindSpore (about 1.4 s to import) is only imported by the
modules that run a network, so ``geoloc --help``, ``--version`` and shell completion stay fast.
"""

import os as _os

__version__ = "0.1.0"

# MindSpore logs at WARNING by default, which on a CPU-only machine prints several lines about missing
# Ascend/GPU plugins on every import. Keep errors only, unless the user chose a level themselves.
_os.environ.setdefault("GLOG_v", "3")
