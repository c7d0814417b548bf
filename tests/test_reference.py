"""docs/reference.md is generated from the code (ci/gen-reference), current, and complete:
every public name has a section with a description, every member listed has one, and the
signatures are the code's own (``async`` included, annotations unquoted)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import harpia
import harpia.asgi
import harpia.testing

ROOT = Path(__file__).resolve().parents[1]
REFERENCE = ROOT / "docs" / "reference.md"
PACKAGE_PARENT = str(Path(harpia.__file__).resolve().parents[1])


def sections() -> dict[str, str]:
    """Heading text (inside the backticks) -> the section's body."""
    text = REFERENCE.read_text()
    found = {}
    for match in re.finditer(r"^### `(?P<head>[^`]+)`\n(?P<body>.*?)(?=^###? |\Z)", text,
                             re.S | re.M):
        found[match["head"]] = match["body"]
    return found


def section(name: str) -> str:
    for head, body in sections().items():
        if re.match(rf"(async )?{re.escape(name)}\b", head):
            return body
    raise AssertionError(f"no section for {name} in docs/reference.md")


def test_reference_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "ci" / "gen-reference"), "--check"], capture_output=True,
        text=True, timeout=120, env=dict(os.environ, PYTHONPATH=PACKAGE_PARENT))
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.parametrize("module", [harpia, harpia.asgi, harpia.testing],
                         ids=lambda m: m.__name__)
def test_every_public_name_has_a_described_section(module: object) -> None:
    for name in module.__all__:  # type: ignore[attr-defined]
        body = section(name).strip()
        description = body.split("\n- ", 1)[0].strip()
        assert description, f"{name}: no description"


def test_every_member_listed_has_a_description() -> None:
    bare = [line for line in REFERENCE.read_text().splitlines()
            if line.startswith("- `") and not re.match(r"- `[^`]+`: \S", line)]
    assert not bare, "\n".join(bare)


def test_signatures_come_from_the_code() -> None:
    text = REFERENCE.read_text()
    assert not re.search(r": '[^']*'", text), "an annotation printed as a quoted string"
    assert "- `async connect(path: str" in section("TestClient")
    for method in ("receive", "send", "close", "wait_closed"):
        assert f"- `async {method}(" in section("TestWebSocket")
    for method in ("start", "stop"):
        assert f"- `async {method}(" in section("Backplane")


def test_server_websocket_and_request_show_what_handlers_use() -> None:
    ws = section("ServerWebSocket")
    for member in ("params: dict[str, str]", "subprotocol: str | None",
                   "extensions: str | None", "secure: bool", "dropped: int (property)",
                   "send(", "subscribe(", "remote_address"):
        assert f"- `{member}" in ws, member
    for internal in ("get_buffer", "buffer_updated", "data_received", "transport"):
        assert f"- `{internal}" not in ws, internal
    request = section("Request")
    for member in ("method", "path", "headers", "params", "query", "url", "remote_address"):
        assert f"- `{member}" in request, member


def test_app_websocket_is_documented() -> None:
    namespace = section("app.websocket")
    assert "- `connections: ConnectionSet[ServerWebSocket[Any]] (property)`" in namespace
    assert "- `subscriber_count(topic: str) -> int`" in namespace
