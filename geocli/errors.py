"""Domain errors: each becomes one line on stderr and a non-zero exit code in the CLI.

Library code raises these instead of printing and exiting, so every command can also be called from
Python. ``exit_code`` follows the CLI convention: 1 for a failure of the work itself, 2 for a usage
error (a bad flag value, an unknown model, preset or config key).
"""

from __future__ import annotations


class GeolocError(Exception):
    """A failure the user can act on; the message says what failed and what to do."""

    exit_code = 1


class UsageError(GeolocError):
    """The command line asked for something that does not exist or cannot be combined."""

    exit_code = 2


class ConfigError(UsageError):
    """A preset, config file or ``--set`` override is invalid."""


class DataError(GeolocError):
    """Input data is missing, malformed or inconsistent; the message names the file (and line)."""


class DownloadError(GeolocError):
    """A download failed after its retries, or its checksum never matched."""


class CheckpointError(GeolocError):
    """A checkpoint cannot be read, or does not fit the model it is loaded into."""


class LaunchError(GeolocError):
    """A distributed launch cannot be set up (msrun missing, bad rank table, worker failed)."""
