"""``python -m harpia``: serves an app given as MODULE:APP over a real socket, and each
mistake a user can make there ends with one readable line and a non-zero exit status."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from websockets.sync.client import connect

import harpia

# The subprocess imports the same harpia as the tests (the tree, or an installed wheel).
PACKAGE_PARENT = str(Path(harpia.__file__).resolve().parents[1])

APP = """
from harpia import harpia

app = harpia()
app.ws("/echo", {"message": lambda ws, message: ws.send(message)})
"""


def write(directory: Path, name: str, source: str) -> None:
    (directory / f"{name}.py").write_text(textwrap.dedent(source))


def harpia_cli(cwd: Path, *args: str) -> subprocess.Popen[str]:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(
        [PACKAGE_PARENT, *filter(None, [os.environ.get("PYTHONPATH")])]))
    return subprocess.Popen([sys.executable, "-m", "harpia", *args], cwd=cwd, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def run_cli(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    proc = harpia_cli(cwd, *args)
    try:
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_listening(proc: subprocess.Popen[str]) -> str:
    """Read stderr until the 'listening on' line; return the URL."""
    assert proc.stderr is not None
    deadline = time.monotonic() + 60
    seen = []
    while time.monotonic() < deadline:
        line = proc.stderr.readline()
        if not line:
            break
        seen.append(line)
        found = re.search(r"listening on (\S+)", line)
        if found:
            return found.group(1)
    proc.kill()
    raise AssertionError("the server never said where it listens:\n" + "".join(seen))


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    write(tmp_path, "echo_app", APP)
    proc = harpia_cli(tmp_path, "echo_app:app", "--port", "0")
    try:
        yield proc, wait_listening(proc)
    finally:
        proc.kill()
        proc.wait(timeout=30)


def test_serves_the_app_on_loopback_and_stops_on_sigterm(
        served: tuple[subprocess.Popen[str], str]) -> None:
    proc, url = served
    assert url.startswith("ws://127.0.0.1:"), url  # loopback unless --host says otherwise
    with connect(url.rstrip("/") + "/echo", open_timeout=30) as ws:
        ws.send("hello")
        assert ws.recv(timeout=30) == "hello"
        proc.send_signal(signal.SIGTERM)
        with pytest.raises(Exception):
            ws.recv(timeout=30)
        assert ws.close_code == 1001
    assert proc.wait(timeout=30) == 0


def test_factory_and_host(tmp_path: Path) -> None:
    write(tmp_path, "factory_app", APP + "\ndef make_app():\n    return app\n")
    proc = harpia_cli(tmp_path, "factory_app:make_app", "--host", "127.0.0.1", "--port", "0")
    try:
        url = wait_listening(proc)
        with connect(url.rstrip("/") + "/echo", open_timeout=30) as ws:
            ws.send(b"\x00\x01")
            assert ws.recv(timeout=30) == b"\x00\x01"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_module_calling_listen_at_import_is_refused(tmp_path: Path) -> None:
    write(tmp_path, "listening_app", APP + "\napp.listen(port=3000)\n")
    result = run_cli(tmp_path, "listening_app:app", "--port", "0")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert "listening_app.py:7 calls app.listen() while 'listening_app' is being imported" in lines[0]
    assert 'if __name__ == "__main__":' in lines[0]
    assert "listening on" not in result.stdout + result.stderr


def test_guarded_listen_is_the_pattern_that_works(tmp_path: Path) -> None:
    write(tmp_path, "guarded_app", APP + '\nif __name__ == "__main__":\n    app.listen(port=3000)\n')
    proc = harpia_cli(tmp_path, "guarded_app:app", "--port", "0")
    try:
        url = wait_listening(proc)
        assert not url.endswith(":3000/")
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0


def test_port_in_use_is_one_line(tmp_path: Path) -> None:
    write(tmp_path, "echo_app", APP)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli(tmp_path, "echo_app:app", "--port", str(port))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(f"harpia: cannot serve on 127.0.0.1:{port}: ")
    assert "address already in use" in lines[0].lower()


@pytest.mark.parametrize(("source", "expected"), [
    ('from harpia import harpia\napp = harpia()\napp.ws("/x", {"mesage": print})\n',
     "harpia: bad_app: unknown handler 'mesage' (known: open, message, close, error, drain, "
     "ping, pong)"),
    ('from harpia import harpia\nclass Chat:\n    def on_message(self, ws, m): pass\n'
     'app = harpia()\napp.ws("/x", Chat())\n',
     "harpia: bad_app: handler object Chat has on_message, which harpia never calls: "
     "the handler methods are named open, message, close, error, drain, ping, pong"),
    ('from harpia import harpia\napp = harpia()\napp.ws("/x", {}, idle_timeout="soon")\n',
     "harpia: bad_app: route option 'idle_timeout' must be int or float, not str"),
    ("import no_such_module_here\n",
     "harpia: cannot import 'bad_app': No module named 'no_such_module_here'"),
    ("app = 42\n", "harpia: 'bad_app:app' is not a harpia app nor an ASGI app (got int)"),
    ("x = 1\n", "harpia: 'bad_app' has no attribute 'app'"),
])
def test_configuration_errors_are_one_line(tmp_path: Path, source: str, expected: str) -> None:
    write(tmp_path, "bad_app", source)
    result = run_cli(tmp_path, "bad_app:app")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith(expected), lines[0]


def test_missing_module_and_bad_spec(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "nowhere:app")
    assert (result.returncode, result.stderr.strip()) == (
        1, "harpia: cannot import 'nowhere': No module named 'nowhere'")
    result = run_cli(tmp_path, ":app")
    assert (result.returncode, result.stderr.strip()) == (1, "harpia: expected MODULE:APP, got ':app'")


@pytest.mark.parametrize(("args", "expected"), [
    (["--tls-cert", "cert.pem"], "--tls-cert and --tls-key go together"),
    (["--busy-poll", "-1"], "--busy-poll:"),
    (["--port", "many"], "argument --port: invalid int value: 'many'"),
])
def test_usage_errors_exit_2(tmp_path: Path, args: list[str], expected: str) -> None:
    write(tmp_path, "echo_app", APP)
    result = run_cli(tmp_path, "echo_app:app", *args)
    assert result.returncode == 2
    assert expected in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_tls_file_is_one_line(tmp_path: Path) -> None:
    write(tmp_path, "echo_app", APP)
    result = run_cli(tmp_path, "echo_app:app", "--port", "0",
                     "--tls-cert", "missing-cert.pem", "--tls-key", "missing-key.pem")
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("harpia: ")


def test_help_says_what_the_default_host_means(tmp_path: Path) -> None:
    result = run_cli(tmp_path, "--help")
    assert result.returncode == 0
    text = " ".join(result.stdout.split())
    assert "default 127.0.0.1: this machine only" in text
    assert "0.0.0.0 for every interface, which app.listen() binds" in text
