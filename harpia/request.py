"""``Request``: the HTTP request behind a WebSocket handshake, as an ``upgrade`` hook
or an ``app.get`` handler sees it."""
from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import parse_qsl

from .http_head import Headers, RequestHead

__all__ = ["Request", "request_url", "query_first_values"]


def request_url(secure: bool, headers: Mapping[str, str], path: str, raw_query: str) -> str:
    """The absolute URL a client asked for: ``ws://host/path?query`` (``wss://`` on TLS),
    the host taken from its ``Host`` header."""
    scheme = "wss" if secure else "ws"
    query = f"?{raw_query}" if raw_query else ""
    return f"{scheme}://{headers.get('host', '')}{path}{query}"


def query_first_values(raw_query: str) -> dict[str, str]:
    """Query parameters, name -> first value, percent-decoded; blank values kept."""
    query: dict[str, str] = {}
    for name, value in parse_qsl(raw_query, keep_blank_values=True):
        query.setdefault(name, value)
    return query


class Request:
    """The HTTP request behind a WebSocket handshake, as an ``upgrade(request)`` hook sees it.

    Attributes: ``method``, ``path`` (percent-encoded, as received),
    ``raw_query``, ``headers`` (:class:`Headers`), ``params`` (route
    parameters), ``remote_address`` (``(host, port)`` or ``None``), ``secure``
    (TLS); computed on first use: ``url`` (``ws://host/path?query``, ``wss://``
    when secure, host from the ``Host`` header) and ``query`` (name -> first
    value).
    """

    __slots__ = (
        "method",
        "path",
        "raw_query",
        "headers",
        "params",
        "remote_address",
        "secure",
        "_url",
        "_query",
    )

    def __init__(
        self,
        head: RequestHead,
        *,
        params: dict[str, str],
        remote_address: tuple[str, int] | None,
        secure: bool,
    ) -> None:
        self.method = head.method
        self.path = head.path
        self.raw_query = head.raw_query
        self.headers = head.headers
        self.params = params
        self.remote_address = remote_address
        self.secure = secure
        self._url: str | None = None
        self._query: dict[str, str] | None = None

    @property
    def url(self) -> str:
        """The absolute URL requested: ``ws://host/path?query`` (``wss://`` over TLS)."""
        url = self._url
        if url is None:
            url = self._url = request_url(self.secure, self.headers, self.path, self.raw_query)
        return url

    @property
    def query(self) -> dict[str, str]:
        """Query parameters, name -> first value, percent-decoded; blank values kept."""
        query = self._query
        if query is None:
            query = self._query = query_first_values(self.raw_query)
        return query

    def __repr__(self) -> str:
        target = f"{self.path}?{self.raw_query}" if self.raw_query else self.path
        return f"<Request {self.method} {target}>"
