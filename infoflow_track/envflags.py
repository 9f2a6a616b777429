"""Boolean environment variables, all read by one strict parser.

A variable is on for 1, true, yes, on and off for 0, false, no, off, empty or unset (any case,
surrounding spaces ignored). Any other value is a UserError naming the variable, its value
and the valid words: ``INFOFLOW_DOWNLOAD=maybe`` is refused, not taken as off.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from infoflow_track.errors import UserError

TRUE_WORDS = ("1", "true", "yes", "on")
FALSE_WORDS = ("0", "false", "no", "off")

#: Every boolean variable infoflow reads; :func:`check_flags` checks them all up front.
BOOLEAN_VARIABLES = (
    "INFOFLOW_DOWNLOAD",  # vision.DOWNLOAD_ENV: missing dataset files may be downloaded
    "INFOFLOW_DISABLE_PLUGIN_AUTOLOAD",  # registry.PLUGINS.autoload_env
    "INFOFLOW_DISABLE_ESTIMATOR_AUTOLOAD",  # estimators.ESTIMATORS.autoload_env
)


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool:
    """Whether the boolean variable ``name`` is on (in ``environ``, default ``os.environ``);
    UserError for a value that is no boolean word."""
    raw = (os.environ if environ is None else environ).get(name, "")
    word = raw.strip().lower()
    if word in TRUE_WORDS:
        return True
    if not word or word in FALSE_WORDS:
        return False
    raise UserError(
        f"{name}={raw!r}: valid are {', '.join(TRUE_WORDS)} or {', '.join(FALSE_WORDS)} "
        "(empty is off)"
    )


def check_flags(environ: Mapping[str, str] | None = None) -> None:
    """Read every boolean variable, so that a malformed one is refused before any work."""
    for name in BOOLEAN_VARIABLES:
        env_flag(name, environ)
