"""geoloc: five geo-localization and image-retrieval models behind one command, on MindSpore.

Importing this package is cheap on purpose: MindSpore (about 1.4 s to import) is only imported by the
modules that run a network, so ``geoloc --help``, ``--version`` and shell completion stay fast.
"""

import os as _os

__version__ = "0.1.0"

# MindSpore logs at WARNING by default, which on a CPU-only machine prints several lines about missing
# Ascend/GPU plugins on every import. Keep errors only, unless the user chose a level themselves.
_os.environ.setdefault("GLOG_v", "3")

# MindSpore's CPU convolutions run on oneDNN, which on AVX-512 CPUs picks a slow reference path for
# the NCHW layout: a 64->64 3x3 convolution ran at 1.2 GFLOP/s instead of 107 (GoogLeNet-BN forward at
# 0.6 instead of 16 images/s; measured on the 2-core AVX-512 EPYC CI machine, see README). Capping
# oneDNN at AVX2 restores full speed and changes nothing on CPUs without AVX-512. It must be set before
# the first convolution runs, hence here; a value the user exported wins.
_os.environ.setdefault("ONEDNN_MAX_CPU_ISA", "AVX2")
