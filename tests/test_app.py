"""The App API: construction, registration errors, route option validation, serving."""
from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from wsclient import ws_connect

import harpia
from harpia import App, ConfigurationError, Listener, RouteOptions
from harpia.options import route_options
from harpia.routing import WebSocketRoute

MiB = 1024 * 1024


def ws_routes(app: App) -> list[WebSocketRoute]:
    return [route for route in app.router.routes() if isinstance(route, WebSocketRoute)]


def test_exports() -> None:
    assert (harpia.CONNECTING, harpia.OPEN, harpia.CLOSING, harpia.CLOSED) == (0, 1, 2, 3)
    for name in harpia.__all__:
        assert hasattr(harpia, name), name
    assert issubclass(harpia.ConfigurationError, TypeError)
    assert issubclass(harpia.ConfigurationError, harpia.HarpiaError)
    assert issubclass(harpia.Reject, harpia.HandshakeError)


def test_harpia_makes_an_app_with_settings() -> None:
    app = harpia.harpia()
    assert isinstance(app, App)
    assert (app.handshake_timeout, app.close_timeout) == (10.0, 5.0)
    assert (app.max_connections, app.max_pending_handshakes) == (None, 1024)
    app = harpia.harpia(handshake_timeout=0.5, close_timeout=2)
    assert (app.handshake_timeout, app.close_timeout) == (0.5, 2.0)
    assert app.busy_poll == 0.0
    assert harpia.harpia(busy_poll=0.0002).busy_poll == 0.0002
    app.busy_poll = 0.001                      # settable before listening (the CLI does)
    assert app.busy_poll == 0.001
    with pytest.raises(ConfigurationError, match="busy_poll"):
        app.busy_poll = 5


@pytest.mark.parametrize("settings", [
    {"handshake_timeout": 0}, {"handshake_timeout": -1}, {"handshake_timeout": True},
    {"close_timeout": "5"}, {"close_timeout": None},
    {"max_connections": 0}, {"max_connections": 1.5}, {"max_pending_handshakes": True},
    {"busy_poll": -0.001}, {"busy_poll": 2}, {"busy_poll": "fast"}, {"busy_poll": True},
])
def test_bad_app_settings_name_the_setting(settings: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError, match=next(iter(settings))):
        harpia.harpia(**settings)


def test_unknown_app_setting_is_a_type_error() -> None:
    with pytest.raises(TypeError):
        harpia.harpia(handshake_timeot=1)


# --------------------------------------------------------------------------- registration

def test_ws_accepts_a_mapping_or_an_object() -> None:
    class Handlers:
        def message(self, ws: Any, message: Any) -> None: ...

    app = harpia.harpia()
    app.ws("/a", {"message": lambda ws, m: None})
    app.ws("/b", Handlers())
    app.ws("/c", {})
    assert sorted(r.pattern for r in ws_routes(app)) == ["/a", "/b", "/c"]


def test_ws_registration_errors_name_the_key() -> None:
    app = harpia.harpia()
    with pytest.raises(TypeError, match="'onopen'"):
        app.ws("/x", {"onopen": lambda ws: None})
    with pytest.raises(TypeError, match="'message'"):
        app.ws("/x", {"message": "echo"})
    with pytest.raises(TypeError, match="'close'"):
        app.ws("/x", {"close": lambda ws, code, reason, extra: None})
    assert ws_routes(app) == []                   # nothing half-registered


def test_a_path_is_registered_once_across_ws_and_get() -> None:
    app = harpia.harpia()
    app.ws("/chat", {})
    app.get("/health", lambda: "ok")
    with pytest.raises(ConfigurationError, match="already registered"):
        app.ws("/chat", {})
    with pytest.raises(ConfigurationError, match="already registered"):
        app.get("/chat", lambda: "page")
    with pytest.raises(ConfigurationError, match="already registered"):
        app.ws("/health", {})
    with pytest.raises(ConfigurationError, match="must start with '/'"):
        app.ws("chat", {})


def test_get_needs_a_callable() -> None:
    with pytest.raises(ConfigurationError, match="'/health'"):
        harpia.harpia().get("/health", "ok")  # type: ignore[arg-type]


# --------------------------------------------------------------------------- route options

def test_route_option_defaults() -> None:
    options = RouteOptions()
    assert options.max_payload_length == 16 * MiB
    assert options.idle_timeout == 120
    assert options.send_pings is True
    assert options.backpressure_limit == 1 * MiB
    assert options.close_on_backpressure_limit is False
    assert options.per_message_deflate is False
    assert options.publish_to_self is False
    assert (options.subprotocols, options.origins, options.upgrade, options.data) == (
        None, None, None, None)
    assert route_options({}) == options


def test_route_options_are_kept_on_the_route() -> None:
    app = harpia.harpia()
    app.ws("/", {}, max_payload_length=10, idle_timeout=0.5, send_pings=False,
           backpressure_limit=2048, close_on_backpressure_limit=True, publish_to_self=True,
           subprotocols=["b", "a"], origins=["https://Example.com/"], data=dict)
    options = ws_routes(app)[0].options
    assert (options.max_payload_length, options.idle_timeout, options.send_pings) == (10, 0.5, False)
    assert (options.backpressure_limit, options.close_on_backpressure_limit) == (2048, True)
    assert options.publish_to_self is True
    assert options.subprotocols == ("b", "a")       # order kept: the server's preference
    assert options.origins == frozenset({"https://example.com"})
    assert options.data is dict
    with pytest.raises(dataclasses.FrozenInstanceError):
        options.idle_timeout = 1  # type: ignore[misc]


@pytest.mark.parametrize("key, value", [
    ("max_payload_length", "16"),
    ("max_payload_length", 1.5),
    ("max_payload_length", True),            # a bool is not a number here
    ("max_payload_length", -1),
    ("idle_timeout", "120"),
    ("idle_timeout", -0.1),
    ("send_pings", 1),                       # and a number is not a flag
    ("backpressure_limit", None),
    ("close_on_backpressure_limit", "yes"),
    ("publish_to_self", 0),
    ("per_message_deflate", "on"),
    ("subprotocols", "chat"),                # a string is not a list of them
    ("subprotocols", ["chat", ""]),
    ("origins", ["https://ok", 3]),
    ("upgrade", "hook"),
    ("data", 42),
    ("max_inbound_backlog", "big"),
])
def test_bad_route_options_name_the_key(key: str, value: object) -> None:
    app = harpia.harpia()
    with pytest.raises(ConfigurationError, match=repr(key)):
        app.ws("/", {}, **{key: value})
    assert ws_routes(app) == []


def test_unknown_route_option_names_it_and_lists_the_known() -> None:
    with pytest.raises(ConfigurationError, match="'maxPayloadLength'") as info:
        harpia.harpia().ws("/", {}, maxPayloadLength=10)
    assert "max_payload_length" in str(info.value)


# --------------------------------------------------------------------------- serving

def test_listen_rejects_unknown_options_before_serving() -> None:
    with pytest.raises(ConfigurationError, match="prot"):
        harpia.harpia().listen({"prot": 3000})


@pytest.mark.parametrize("tls, words", [
    ({"cert": "c.pem"}, "both 'cert' and 'key'"),
    ({"cert": "c.pem", "key": "k.pem", "pfx": "x"}, "'pfx'|pfx"),
    ("cert.pem", "mapping"),
])
def test_bad_tls_settings(tls: Any, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        harpia.harpia().serve(tls=tls)


async def test_serve_is_an_async_context_manager_and_awaitable() -> None:
    app = harpia.harpia()
    app.ws("/", {"message": lambda ws, m: ws.send(m)})
    listener = app.serve(port=0)
    assert isinstance(listener, Listener)
    async with listener as server:
        assert server is listener and server.port > 0
        async with ws_connect(server.port) as client:
            await client.send("x")
            assert await client.recv() == "x"
    started = await app.serve()                      # ``await app.serve()`` starts it too
    try:
        async with ws_connect(started.port) as client:
            await client.send("y")
            assert await client.recv() == "y"
    finally:
        await started.stop()


async def test_app_publish_and_connections_without_clients() -> None:
    app = harpia.harpia()
    app.ws("/", {})
    async with app.serve():
        assert app.publish("nobody", "x") == 0
        assert len(app.websocket.connections) == 0
        assert list(app.websocket.connections) == []
        assert app.websocket.subscriber_count("nobody") == 0


async def test_publish_before_the_app_is_served_warns_once(caplog: pytest.LogCaptureFixture) -> None:
    app = harpia.harpia()
    app.ws("/", {})
    assert app.publish("news", "early") == 0
    assert app.publish("news", "again") == 0
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert warnings == ["app.publish('news') before the app is served: no connection can be "
                        "subscribed yet, so it reached nobody"]
    caplog.clear()
    async with app.serve():
        assert app.publish("news", "served") == 0
    assert not [r for r in caplog.records if r.levelname == "WARNING"]


async def test_publish_while_served_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    app = harpia.harpia()
    app.ws("/", {})
    async with app.serve():
        assert app.publish("nobody", "x") == 0
    assert not [r for r in caplog.records if "before the app is served" in r.getMessage()]
