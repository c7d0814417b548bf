"""The public API is typed: mypy --strict passes on harpia and the examples, catches a
wrong handler, and the Cython stubs match the compiled modules (stubtest)."""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

import harpia

ROOT = Path(__file__).resolve().parents[1]
# The package under test: the tree's, or an installed wheel's (tests run from a copy).
PACKAGE = Path(harpia.__file__).resolve().parent


def mypy(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "mypy", "--strict", *args],
                          cwd=cwd, capture_output=True, text=True, timeout=600)


def test_mypy_strict_passes_on_harpia_and_the_examples() -> None:
    # -p finds harpia where Python does: the tree (the working directory) or site-packages.
    for args in (("-p", "harpia"), ("examples",)):
        result = mypy(*args)
        assert result.returncode == 0, result.stdout + result.stderr


def test_mypy_catches_wrong_handlers(tmp_path: Path) -> None:
    source = tmp_path / "wrong.py"
    source.write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from harpia import ServerWebSocket, harpia

        @dataclass
        class Player:
            score: int = 0

        app = harpia()

        def on_message(ws: ServerWebSocket[Player], message: int) -> None:   # not str | bytes
            ws.data.score += message

        def on_open(ws: ServerWebSocket[Player]) -> None:
            ws.data.name = "x"                                                # no such field

        app.ws("/a", {"message": on_message, "open": on_open}, data=Player)
        app.ws("/b", {"mesage": on_message})                                  # misspelt key
    """))
    result = mypy("--cache-dir", str(tmp_path / "cache"), str(source))
    lines = source.read_text().splitlines()
    errors = {int(line.split(":")[1]) for line in result.stdout.splitlines()
              if line.startswith(str(source)) and ": error:" in line}

    def line_of(marker: str) -> int:
        return next(i for i, text in enumerate(lines, 1) if marker in text)

    assert errors == {line_of("no such field"), line_of('app.ws("/a"'), line_of("misspelt")}, \
        result.stdout
    assert '"Player" has no attribute "name"' in result.stdout


def test_typed_data_flows_from_data_and_upgrade(tmp_path: Path) -> None:
    source = tmp_path / "right.py"
    source.write_text(textwrap.dedent("""
        from dataclasses import dataclass
        from harpia import Request, ServerWebSocket, harpia

        @dataclass
        class Token:
            token: str | None

        app = harpia()

        def secure_open(ws: ServerWebSocket[Token]) -> None:
            if ws.data.token != "s3cret":
                ws.close(1008, "Invalid token")

        app.ws("/secure", {"open": secure_open},
               upgrade=lambda request: Token(request.query.get("token")))

        class Game:
            def open(self, ws: ServerWebSocket[Token]) -> None:
                ws.send("hi")

        app.ws("/game", Game())
        app.ws("/echo", {"message": lambda ws, message: ws.send(message)})
    """))
    result = mypy("--cache-dir", str(tmp_path / "cache"), str(source))
    assert result.returncode == 0, result.stdout


def test_stubs_match_the_compiled_modules() -> None:
    # Every compiled unit of the engine ships a stub, and every stub is checked.
    assert [p.stem for p in PACKAGE.glob("_*.pyx") if not p.with_suffix(".pyi").exists()] == []
    modules = [f"harpia.{p.stem}" for p in sorted(PACKAGE.glob("_*.pyi"))]
    result = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", *modules,
         "--allowlist", str(PACKAGE / "stubtest-allowlist.txt")],
        cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout + result.stderr
