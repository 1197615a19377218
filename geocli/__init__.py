"""geoloc: five geo-localization and image-retrieval models behind one command, on MindSpore.

Importing this package is cheap on purpose: MindSpore (about 1.4 s to import) is only imported by the
modules that run a network, so ``geoloc --help``, ``--version`` and shell completion stay fast.
"""

__version__ = "0.1.0"
