"""Connection ids (``ws.id``) in the log lines about a connection, and JSON log lines."""
from __future__ import annotations

import io
import json
import logging
from typing import Any

from wsclient import CLOSE, RawClient, client_frame

from harpia import harpia
from harpia.logformat import JsonFormatter


async def test_connection_id_in_log_lines_as_json() -> None:
    app = harpia()
    ids: list[str] = []
    app.ws("/", {"open": lambda ws: ids.append(ws.id)})
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("harpia")
    logger.addHandler(handler)
    try:
        async with app.serve() as server:
            for _ in range(2):
                client = await RawClient.open(server.port)
                await client.send(client_frame(0x3, b"reserved opcode"))   # a protocol error
                frame = await client.recv_frame()
                assert frame.opcode == CLOSE and frame.close_code == 1002
                client.sock.close()
            logger.info("not about a connection", extra={"user_field": 7})
    finally:
        logger.removeHandler(handler)
    lines = [json.loads(line) for line in stream.getvalue().splitlines()]
    assert len(set(ids)) == 2 and all("-" in i for i in ids)
    for connection in ids:
        about = [line for line in lines if line.get("connection_id") == connection]
        messages = " | ".join(line["message"] for line in about)
        assert any(line["message"].startswith(f"open {connection} /") for line in about), messages
        assert any(line["message"].startswith(f"close {connection} /") and "code 1002" in line["message"]
                   for line in about), messages
    protocol_errors = [line for line in lines if "with 1002" in line["message"]]
    assert protocol_errors and ids[0] in protocol_errors[0]["message"]
    assert lines[-1]["user_field"] == 7 and lines[-1]["level"] == "INFO"
    assert all(set(line) >= {"time", "level", "logger", "message"} for line in lines)


def test_exceptions_are_one_line() -> None:
    record: Any = None
    try:
        raise ValueError("boom")
    except ValueError:
        import sys
        record = logging.LogRecord("harpia", logging.ERROR, __file__, 1, "failed %s", ("x",), sys.exc_info())
    text = JsonFormatter().format(record)
    assert "\n" not in text
    line = json.loads(text)
    assert line["message"] == "failed x" and "ValueError: boom" in line["exception"]
