"""TLS settings: ``tls={"key": ..., "cert": ...}`` or an ``ssl.SSLContext``, as a context."""
from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any

from .errors import ConfigurationError

__all__ = ["make_ssl_context"]


def make_ssl_context(tls: Mapping[str, Any] | ssl.SSLContext | None) -> ssl.SSLContext | None:
    """``{"key": path, "cert": path}`` (optionally ``"passphrase"``, ``"ca"``) or a context."""
    if tls is None or isinstance(tls, ssl.SSLContext):
        return tls
    if not isinstance(tls, Mapping):
        raise ConfigurationError("tls must be a mapping with 'key' and 'cert', or an ssl.SSLContext")
    unknown = set(tls) - {"key", "cert", "passphrase", "ca"}
    if unknown:
        raise ConfigurationError(f"unknown tls option(s): {', '.join(sorted(unknown))}")
    if "cert" not in tls or "key" not in tls:
        raise ConfigurationError("tls needs both 'cert' and 'key' (paths to PEM files)")
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(str(tls["cert"]), str(tls["key"]), tls.get("passphrase"))
    if tls.get("ca"):
        context.load_verify_locations(str(tls["ca"]))
    return context
