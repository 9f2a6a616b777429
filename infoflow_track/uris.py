"""Credentials in URIs: masked wherever a URI is shown, and taken out of MLflow server URIs.

``postgresql://u:pw@host/db`` is shown as ``postgresql://u:***@host/db``; a ``password=``,
``token=`` or ``secret=`` query value as ``***``. MLflow takes a tracking server's basic-auth
credentials from ``MLFLOW_TRACKING_USERNAME`` / ``MLFLOW_TRACKING_PASSWORD``, not from the
URI, so :func:`split_credentials` moves them there.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit, urlunsplit

#: ``scheme://user:password@`` anywhere in a text (errors quote URIs).
_USERINFO = re.compile(r"(?P<head>[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)(?P<secret>[^@\s]*)@")
#: ``password=...`` (and the like) in a query string or a libpq keyword list.
_SECRET_PARAM = re.compile(
    r"(?P<head>\b(?:password|passwd|pwd|token|secret|api_key|access_key)=)(?P<secret>[^&\s'\"]*)",
    re.IGNORECASE,
)
MASK = "***"


def mask_credentials(text: str) -> str:
    """``text`` with every password, token or secret of a URI in it replaced by ``***``."""
    text = _USERINFO.sub(lambda m: f"{m['head']}{MASK}@", text)
    return _SECRET_PARAM.sub(lambda m: f"{m['head']}{MASK}", text)


def split_credentials(uri: str) -> tuple[str, str | None, str | None]:
    """``(uri without user:password@, user, password)``; the user and password are None
    where the URI carries none."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri, None, None
    host = parts.hostname or ""
    if ":" in host:  # an IPv6 address
        host = f"[{host}]"
    netloc = host + (f":{parts.port}" if parts.port else "")
    bare = urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    user = unquote(parts.username) if parts.username is not None else None
    password = unquote(parts.password) if parts.password is not None else None
    return bare, user, password
