"""Model backends. Importing this package registers every model (cheaply: no MindSpore import)."""

from geocli.models import toy  # noqa: F401  (hidden smoke-test model used by the runtime tests)
from geocli.models import posenet  # noqa: F401
from geocli.models import creid  # noqa: F401
from geocli.models import sdnet  # noqa: F401
from geocli.models import delf  # noqa: F401
from geocli.models import vigor  # noqa: F401
