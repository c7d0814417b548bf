"""Path patterns with ``:params`` and the router (units, no sockets)."""
from __future__ import annotations

import pytest

from harpia.errors import ConfigurationError
from harpia.routing import PathPattern, Router


@pytest.mark.parametrize("pattern, path, params", [
    ("/chat", "/chat", {}),
    ("/room/:roomId", "/room/42", {"roomId": "42"}),
    ("/room/:roomId", "/room/a%20b", {"roomId": "a%20b"}),     # as received, not decoded
    ("/u/:user/post/:post_id", "/u/ann/post/7", {"user": "ann", "post_id": "7"}),
    ("/files/:name.txt", "/files/notes.txt", {"name": "notes"}),
    ("/static/*", "/static/css/site.css", {}),
    ("/static/*", "/static/", {}),
    ("/g/:id/*", "/g/9/any/thing", {"id": "9"}),
])
def test_pattern_matches(pattern: str, path: str, params: dict[str, str]) -> None:
    assert PathPattern(pattern).match(path) == params


@pytest.mark.parametrize("pattern, path", [
    ("/chat", "/chat/"),
    ("/chat", "/Chat"),
    ("/room/:roomId", "/room/"),              # a parameter is never empty
    ("/room/:roomId", "/room"),
    ("/room/:roomId", "/room/1/2"),           # ... and is one segment
    ("/room/:roomId", "/rooms/1"),
    ("/a.b", "/axb"),                         # literal text is not a regex
    ("/files/:name.txt", "/files/notes.txt.bak"),
    ("/static/*", "/static"),
    ("/static/*", "/other/x"),
])
def test_pattern_does_not_match(pattern: str, path: str) -> None:
    assert PathPattern(pattern).match(path) is None


def test_pattern_names_in_order() -> None:
    assert PathPattern("/a/:first/b/:second").names == ("first", "second")
    assert PathPattern("/plain").names == ()


@pytest.mark.parametrize("pattern, words", [
    ("chat", "must start with '/'"),
    ("", "must start with '/'"),
    ("/x/:id/y/:id", "repeats a parameter name"),
])
def test_bad_patterns(pattern: str, words: str) -> None:
    with pytest.raises(ConfigurationError, match=words):
        PathPattern(pattern)


def test_router_prefers_static_routes_then_patterns_in_order() -> None:
    router: Router[str] = Router()
    router.add("/room/:id", "by id")
    router.add("/room/lobby", "lobby")
    router.add("/room/*", "any room")
    router.add("/:anything", "catch one segment")
    assert router.match("/room/lobby") == ("lobby", {})          # static wins, though later
    assert router.match("/room/7") == ("by id", {"id": "7"})
    assert router.match("/room/7/8") == ("any room", {})
    assert router.match("/top") == ("catch one segment", {"anything": "top"})
    assert router.match("/a/b/c") is None


def test_router_refuses_a_path_twice() -> None:
    router: Router[str] = Router()
    router.add("/chat", "one")
    router.add("/room/:id", "two")
    for pattern in ("/chat", "/room/:id"):
        with pytest.raises(ConfigurationError, match="already registered"):
            router.add(pattern, "again")


def test_router_refuses_a_pattern_that_only_renames_the_parameters() -> None:
    # "/room/:other" would match exactly the paths "/room/:id" takes first: never reached.
    router: Router[str] = Router()
    router.add("/room/:id/seat/:n", "first")
    with pytest.raises(ConfigurationError, match=r"already registered as '/room/:id/seat/:n'"):
        router.add("/room/:other/seat/:k", "unreachable")
    router.add("/room/:id/seat", "different shape")            # a different shape is fine
    router.add("/room/:id/*", "wildcard")
    assert router.match("/room/1/seat/2") == ("first", {"id": "1", "n": "2"})
    assert router.match("/room/1/seat") == ("different shape", {"id": "1"})
