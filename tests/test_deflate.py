"""permessage-deflate settings and negotiation (harpia.deflate), sans-I/O.

The negotiation is checked against RFC 7692 section 7 rule by rule, then against the two
client implementations we interoperate with: every offer websockets' and wsproto's
clients can make is answered with a response they accept, and both sides end up with the
same parameters.
"""
from __future__ import annotations

import dataclasses
import itertools
from typing import Any

import pytest
from websockets.extensions.permessage_deflate import ClientPerMessageDeflateFactory
from wsproto.extensions import PerMessageDeflate as WsprotoDeflate

from harpia.deflate import DeflateAgreement, DeflateOptions, deflate_options, negotiate
from harpia.errors import ConfigurationError
from harpia.handshake import parse_extension_offers
from harpia.http_parser import HttpRequestParser
from harpia.options import route_options

DEFAULTS = DeflateOptions()


def offers(*values: str) -> list[tuple[str, list[tuple[str, str | None]]]]:
    """``Sec-WebSocket-Extensions`` header values parsed as the server parses them."""
    lines = "".join(f"Sec-WebSocket-Extensions: {v}\r\n" for v in values)
    head = HttpRequestParser().feed(f"GET / HTTP/1.1\r\nHost: x\r\n{lines}\r\n".encode())
    assert head is not None
    return parse_extension_offers(head)


def response(*values: str, **options: Any) -> str | None:
    agreement = negotiate(offers(*values), DeflateOptions(**options))
    return None if agreement is None else agreement.response


# --------------------------------------------------------------------------- settings

def test_defaults_are_documented_values() -> None:
    assert DEFAULTS == DeflateOptions(
        server_no_context_takeover=True, client_no_context_takeover=True,
        server_max_window_bits=15, client_max_window_bits=15, compression_level=1,
        memory_level=8, compress_threshold=128)
    with pytest.raises(dataclasses.FrozenInstanceError):
        DEFAULTS.compression_level = 1  # type: ignore[misc]


def test_route_option_forms() -> None:
    assert deflate_options(False) is None
    assert deflate_options(True) == DEFAULTS
    assert deflate_options({"compress_threshold": 0}) == DeflateOptions(compress_threshold=0)
    custom = DeflateOptions(memory_level=5)
    assert deflate_options(custom) is custom
    assert route_options({}).deflate is None
    assert route_options({"per_message_deflate": True}).deflate == DEFAULTS
    assert route_options({"per_message_deflate": custom}).deflate is custom
    assert route_options({"per_message_deflate": {"memory_level": 5}}).deflate == custom


@pytest.mark.parametrize("key, value", [
    ("server_max_window_bits", 8),          # zlib's raw deflate has no 256-byte window
    ("server_max_window_bits", 16),
    ("client_max_window_bits", 7),
    ("client_max_window_bits", "12"),
    ("compression_level", 10),
    ("compression_level", -1),
    ("memory_level", 0),
    ("memory_level", True),                 # a flag is not a number
    ("compress_threshold", -1),
    ("compress_threshold", 1.5),
    ("server_no_context_takeover", 1),      # and a number is not a flag
    ("client_no_context_takeover", "yes"),
])
def test_bad_settings_name_the_key(key: str, value: object) -> None:
    with pytest.raises(ConfigurationError, match=repr(key)):
        DeflateOptions(**{key: value})
    with pytest.raises(ConfigurationError, match=repr(key)):
        route_options({"per_message_deflate": {key: value}})


def test_inflate_limits_are_route_options() -> None:
    defaults = route_options({})
    assert (defaults.max_inflated_length, defaults.max_compression_ratio) == (None, 100)
    options = route_options({"max_inflated_length": 65536, "max_compression_ratio": None})
    assert (options.max_inflated_length, options.max_compression_ratio) == (65536, None)
    for key in ("max_inflated_length", "max_compression_ratio"):
        for bad in (0, -1, 1.5, True, "100"):
            with pytest.raises(ConfigurationError, match=repr(key)):
                route_options({key: bad})


def test_unknown_setting_names_it() -> None:
    with pytest.raises(ConfigurationError, match="'window_bits'"):
        deflate_options({"window_bits": 10})
    with pytest.raises(ConfigurationError, match="'per_message_deflate'"):
        route_options({"per_message_deflate": "on"})


def test_engine_settings_map_server_to_local() -> None:
    agreement = negotiate(offers("permessage-deflate; server_max_window_bits=10"),
                          DeflateOptions(client_no_context_takeover=False, memory_level=4))
    assert agreement is not None
    assert agreement.engine_settings(DeflateOptions(memory_level=4)) == {
        "local_no_context_takeover": True, "remote_no_context_takeover": False,
        "local_max_window_bits": 10, "remote_max_window_bits": 15,
        "compression_level": 1, "memory_level": 4, "compress_threshold": 128}


# --------------------------------------------------------------------------- negotiation

def test_no_offer_no_extension() -> None:
    assert negotiate([], DEFAULTS) is None
    assert response("x-webkit-deflate-frame") is None
    assert response("permessage-foo; a=1") is None


def test_plain_offer_gets_the_defaults() -> None:
    agreement = negotiate(offers("permessage-deflate"), DEFAULTS)
    assert agreement == DeflateAgreement(
        server_no_context_takeover=True, client_no_context_takeover=True,
        server_max_window_bits=15, client_max_window_bits=15,
        response="permessage-deflate; server_no_context_takeover; client_no_context_takeover")


def test_extension_name_is_case_insensitive_and_other_extensions_are_skipped() -> None:
    assert response("foo, PerMessage-Deflate") is not None


@pytest.mark.parametrize("offer, options, expected", [
    # Context takeover: the client may forbid ours; we may always forbid theirs.
    ("permessage-deflate", {"server_no_context_takeover": False, "client_no_context_takeover": False},
     "permessage-deflate"),
    ("permessage-deflate; server_no_context_takeover",
     {"server_no_context_takeover": False, "client_no_context_takeover": False},
     "permessage-deflate; server_no_context_takeover"),
    ("permessage-deflate; client_no_context_takeover",
     {"server_no_context_takeover": False, "client_no_context_takeover": False},
     "permessage-deflate; client_no_context_takeover"),
    # server_max_window_bits: the client's limit wins when lower; ours is announced when < 15.
    ("permessage-deflate; server_max_window_bits=10", {},
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=10"),
    ("permessage-deflate; server_max_window_bits=15", {"server_max_window_bits": 12},
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=12"),
    ("permessage-deflate", {"server_max_window_bits": 11},
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=11"),
    ("permessage-deflate; server_max_window_bits=8", {},
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=8"),
    # client_max_window_bits: only answered when offered; without a value, ours (if < 15).
    ("permessage-deflate; client_max_window_bits", {},
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    ("permessage-deflate; client_max_window_bits", {"client_max_window_bits": 10},
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "client_max_window_bits=10"),
    ("permessage-deflate; client_max_window_bits=9", {"client_max_window_bits": 12},
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "client_max_window_bits=9"),
    ("permessage-deflate; client_max_window_bits=15", {"client_max_window_bits": 12},
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "client_max_window_bits=12"),
    ("permessage-deflate", {"client_max_window_bits": 10},
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover"),
    # Quoted values are tokens too (RFC 6455 section 9.1).
    ('permessage-deflate; server_max_window_bits="10"', {},
     "permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
     "server_max_window_bits=10"),
])
def test_each_parameter(offer: str, options: dict[str, Any], expected: str) -> None:
    assert response(offer, **options) == expected


@pytest.mark.parametrize("offer", [
    "permessage-deflate; server_no_context_takeover; server_no_context_takeover",
    "permessage-deflate; client_max_window_bits; client_max_window_bits=10",
    "permessage-deflate; server_max_window_bits=10; server_max_window_bits=10",
    "permessage-deflate; server_no_context_takeover=1",
    "permessage-deflate; client_no_context_takeover=true",
    "permessage-deflate; server_max_window_bits",
    "permessage-deflate; server_max_window_bits=7",
    "permessage-deflate; server_max_window_bits=16",
    "permessage-deflate; server_max_window_bits=010",
    "permessage-deflate; client_max_window_bits=0",
    "permessage-deflate; client_max_window_bits=abc",
    "permessage-deflate; mystery",
    "permessage-deflate; mystery=1",
])
def test_invalid_offers_are_declined(offer: str) -> None:
    assert response(offer) is None


def test_first_acceptable_offer_wins() -> None:
    header = ("permessage-deflate; server_max_window_bits=99, "
              "permessage-deflate; client_max_window_bits=9, permessage-deflate")
    assert response(header) == ("permessage-deflate; server_no_context_takeover; "
                                "client_no_context_takeover; client_max_window_bits=9")
    # The same across header lines.
    assert response("permessage-deflate; mystery", "permessage-deflate; server_max_window_bits=12") \
        == ("permessage-deflate; server_no_context_takeover; client_no_context_takeover; "
            "server_max_window_bits=12")


def test_browser_offers() -> None:
    # Chromium and Firefox, as they send it.
    assert response("permessage-deflate; client_max_window_bits") == \
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"
    assert response("permessage-deflate") == \
        "permessage-deflate; server_no_context_takeover; client_no_context_takeover"


# --------------------------------------------------------------------------- interoperability

OPTION_SETS = [
    DEFAULTS,
    DeflateOptions(server_no_context_takeover=False, client_no_context_takeover=False),
    DeflateOptions(server_max_window_bits=10, client_max_window_bits=9),
    DeflateOptions(server_no_context_takeover=False, client_max_window_bits=12),
]

WEBSOCKETS_CLIENTS = [
    dict(zip(("server_no_context_takeover", "client_no_context_takeover",
              "server_max_window_bits", "client_max_window_bits"), combo))
    for combo in itertools.product((False, True), (False, True), (None, 9, 12, 15),
                                   (None, True, 10, 15))
]


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("client", WEBSOCKETS_CLIENTS,
                         ids=[",".join(f"{k}={v}" for k, v in c.items()) for c in WEBSOCKETS_CLIENTS])
def test_websockets_client_accepts_the_response(client: dict[str, Any],
                                                options: DeflateOptions) -> None:
    factory = ClientPerMessageDeflateFactory(**client)
    offer = "; ".join(["permessage-deflate"] + [
        name if value is None else f"{name}={value}" for name, value in factory.get_request_params()])
    agreement = negotiate(offers(offer), options)
    assert agreement is not None
    params = [p for _, p in offers(agreement.response)][0]
    extension = factory.process_response_params(params, [])
    # websockets' names: "local" is the client.  Both sides agree on every parameter.
    assert extension.remote_no_context_takeover == agreement.server_no_context_takeover
    assert extension.local_no_context_takeover == agreement.client_no_context_takeover
    assert (extension.remote_max_window_bits or 15) == agreement.server_max_window_bits
    assert (extension.local_max_window_bits or 15) <= agreement.client_max_window_bits
    if client["server_no_context_takeover"]:
        assert agreement.server_no_context_takeover
    if client["server_max_window_bits"]:
        assert agreement.server_max_window_bits <= client["server_max_window_bits"]


WSPROTO_CLIENTS: list[dict[str, Any]] = [
    {}, {"client_no_context_takeover": True}, {"server_no_context_takeover": True},
    {"client_max_window_bits": 9, "server_max_window_bits": 10},
    {"client_max_window_bits": 15, "server_max_window_bits": 12,
     "client_no_context_takeover": True, "server_no_context_takeover": True},
]


@pytest.mark.parametrize("options", OPTION_SETS)
@pytest.mark.parametrize("client", WSPROTO_CLIENTS)
def test_wsproto_client_accepts_the_response(client: dict[str, Any], options: DeflateOptions) -> None:
    extension = WsprotoDeflate(**client)
    offer = extension.offer()
    agreement = negotiate(offers(f"permessage-deflate; {offer}"), options)
    assert agreement is not None
    extension.finalize(agreement.response)
    assert extension.server_no_context_takeover == agreement.server_no_context_takeover
    assert extension.client_no_context_takeover == agreement.client_no_context_takeover
    assert extension.server_max_window_bits == agreement.server_max_window_bits
    assert extension.client_max_window_bits == agreement.client_max_window_bits
