"""Test support: every ``async def`` test runs once on asyncio and once on uvloop."""
from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Callable
from typing import Any

import pytest
import uvloop

LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {
    "asyncio": asyncio.new_event_loop,
    "uvloop": uvloop.new_event_loop,
}


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if inspect.iscoroutinefunction(metafunc.function) and "loop_kind" not in metafunc.fixturenames:
        metafunc.fixturenames.append("loop_kind")
    if "loop_kind" in metafunc.fixturenames:
        metafunc.parametrize("loop_kind", list(LOOPS), scope="function")


@pytest.hookimpl(tryfirst=True)
def pytest_pyfunc_call(pyfuncitem: pytest.Function) -> bool | None:
    if not inspect.iscoroutinefunction(pyfuncitem.obj):
        return None
    # From the parametrization, not funcargs: a test that does not name loop_kind
    # as an argument does not get it there, and would run on asyncio twice.
    callspec = getattr(pyfuncitem, "callspec", None)
    kind = callspec.params.get("loop_kind", "asyncio") if callspec is not None else "asyncio"
    names = pyfuncitem._fixtureinfo.argnames
    kwargs = {name: pyfuncitem.funcargs[name] for name in names}
    timeout = pyfuncitem.get_closest_marker("timeout")
    seconds = timeout.args[0] if timeout else 30.0

    async def run() -> Any:
        return await asyncio.wait_for(pyfuncitem.obj(**kwargs), seconds)

    with asyncio.Runner(loop_factory=LOOPS[kind]) as runner:
        runner.run(run())
    return True


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "timeout(seconds): bound an async test (default 30 s)")


@pytest.fixture(autouse=True)
def _harpia_logs(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="harpia")


@pytest.fixture
def bystander() -> Any:
    """``async with bystander(port) as b``: a well-behaved client echoing on ``/echo``
    while a test attacks the server (see tests/hardening.py); each one must be used."""
    from hardening import Bystander

    made: list[Bystander] = []

    def make(port: int, path: str = "/echo", **options: Any) -> Bystander:
        made.append(Bystander(port, path, **options))
        return made[-1]

    yield make
    assert all(b.finished for b in made), "a bystander was made but never used"
