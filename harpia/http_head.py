"""The parsed HTTP request head: :class:`Headers` and :class:`RequestHead`.

Plain data, shared by the request parser (``http_parser``), the WebSocket checks
(``handshake``), the responses (``http_response``) and what handlers see
(``request``, ``connection``).
"""
from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from typing import TypeVar, overload

__all__ = ["Headers", "RequestHead", "TOKEN_RE"]

_T = TypeVar("_T")

#: An HTTP token (tchar+, RFC 9110 §5.6.2): header names, subprotocols, extension names.
TOKEN_RE = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")


class Headers(Mapping[str, str]):
    """HTTP header fields: case-insensitive, multi-valued, in the order received.

    ``headers["sec-websocket-key"]`` is the first value of that field;
    :meth:`get_all` returns every value; :meth:`raw_items` the fields as
    received, original case included.  Iteration yields each distinct name
    once, lower-cased, in order of first appearance.

    Only the list of ``(name, value)`` pairs is stored; the lower-case index
    used for lookups is built on first use.  Servers keep one of these per open
    connection, so they must stay small.
    """

    __slots__ = ("_items", "_index", "_multi")

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = list(items)
        # lower-case name -> first value.  Most names occur once, so a second
        # dict holds the (rare) names that repeat instead of a list per name.
        self._index: dict[str, str] | None = None
        self._multi: dict[str, list[str]] | None = None

    def _index_or_build(self) -> dict[str, str]:
        index = self._index
        return index if index is not None else self._build_index()

    def _build_index(self) -> dict[str, str]:
        index: dict[str, str] = {}
        multi: dict[str, list[str]] | None = None
        for name, value in self._items:
            key = name.lower()
            if key in index:
                if multi is None:
                    multi = {}
                values = multi.get(key)
                if values is None:
                    multi[key] = [index[key], value]
                else:
                    values.append(value)
            else:
                index[key] = value
        self._index = index
        self._multi = multi
        return index

    def compact(self) -> None:
        """Drop the lookup index (rebuilt on next use): what an idle connection keeps."""
        self._index = None
        self._multi = None

    def __getitem__(self, name: str) -> str:
        """Return the first value of header ``name``; ``KeyError`` if absent."""
        index = self._index_or_build()
        try:
            return index[name.lower()]
        except KeyError:
            raise KeyError(name) from None

    @overload
    def get(self, name: str, /) -> str | None: ...

    @overload
    def get(self, name: str, default: str, /) -> str: ...

    @overload
    def get(self, name: str, default: _T, /) -> str | _T: ...

    def get(self, name: str, default: object = None, /) -> object:
        """Return the first value of header ``name``, or ``default``."""
        # Overridden because Mapping.get goes through a raised KeyError.
        index = self._index_or_build()
        return index.get(name.lower(), default)

    def get_all(self, name: str) -> list[str]:
        """Return every value of header ``name`` in the order received (``[]`` if absent)."""
        index = self._index_or_build()
        key = name.lower()
        multi = self._multi
        if multi is not None and key in multi:
            return list(multi[key])
        value = index.get(key)
        return [] if value is None else [value]

    def unique_fields(self) -> dict[str, str] | None:
        """Lower-case name -> value when no name occurs twice (what a usual request sends),
        else ``None``: one dict lookup per field for a caller that needs single values.
        The dict is the lookup index itself: read it, never change it."""
        index = self._index_or_build()
        return index if self._multi is None else None

    def raw_items(self) -> list[tuple[str, str]]:
        """Return the ``(name, value)`` pairs as received, original case, repeats included."""
        return list(self._items)

    def __iter__(self) -> Iterator[str]:
        index = self._index_or_build()
        return iter(index)

    def __len__(self) -> int:
        index = self._index_or_build()
        return len(index)

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        index = self._index_or_build()
        return name.lower() in index

    def __eq__(self, other: object) -> bool:
        # Two Headers are equal when they hold the same fields in the same
        # order, values included, whatever the case of the names.  Against
        # another mapping, the Mapping rule applies (same names, first values).
        if isinstance(other, Headers):
            return len(self._items) == len(other._items) and all(
                a[1] == b[1] and a[0].lower() == b[0].lower() for a, b in zip(self._items, other._items)
            )
        return super().__eq__(other)

    __hash__ = None  # type: ignore[assignment]  # mutable-looking mapping, like dict

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


@dataclass(slots=True)
class RequestHead:
    """A parsed HTTP request line and header fields.

    ``target`` is the request-target exactly as received; ``path`` and
    ``raw_query`` are split from it (still percent-encoded).  For an
    absolute-form target (``http://host/p?q``) ``path`` and ``raw_query`` are
    those of its path part.
    """

    method: str
    target: str
    path: str
    raw_query: str
    http_version: str
    headers: Headers

