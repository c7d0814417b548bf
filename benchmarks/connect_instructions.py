"""Server instructions per connection on the connect path (open, handshake, close), counted
by callgrind.

The benchmark server (``servers/harpia_server.py``, default settings) runs under
``valgrind --tool=callgrind``; ``loadgen/wsload --mode connect`` first opens and closes a few
hundred connections unmeasured (imports, caches, first allocations), then the counters are
zeroed, ``--cycles`` more connections go through, and the counters are dumped.  Instructions
in the dump divided by the cycles are the user-space cost of one connection: the upgrade
stage, the 101, the connection object, the close handshake and the bookkeeping.  The
kernel's share (the system calls) is not counted; ``strace -c -f`` counts those.

A fixed workload executes the same instructions whatever the machine's load, so an A/B
holds on a shared machine where timings do not.  ``--tree`` measures other checkouts (with
their extensions built in place) in the same run:

    python benchmarks/connect_instructions.py --tree . --tree ../old-checkout
"""
from __future__ import annotations

import argparse
import glob
import os
import re
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BENCH_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))
from e2e import build_loadgen  # noqa: E402  (a sibling script, not a package)

SERVER = BENCH_DIR / "servers" / "harpia_server.py"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_listening(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the server exited with {proc.returncode}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.2)
    raise RuntimeError(f"the server did not listen within {timeout:.0f} s")


def _connects(port: int, cycles: int) -> None:
    subprocess.run([str(build_loadgen()), "--mode", "connect", "--port", str(port), "--conns", "4",
                    "--messages", str(cycles), "--warmup", "0", "--timeout", "900"],
                   check=True, stdout=subprocess.DEVNULL)


def instructions_per_connection(tree: Path, cycles: int) -> float:
    port = _free_port()
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        env = dict(os.environ, PYTHONPATH=str(tree))
        proc = subprocess.Popen(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", sys.executable,
             str(SERVER), "--port", str(port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait_listening(port, proc, 300)
            _connects(port, 300)                       # warm-up, not counted
            subprocess.run(["callgrind_control", "-z", str(proc.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _connects(port, cycles)
            subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        finally:
            proc.terminate()
            proc.wait(60)
        for path in glob.glob(out + ".*"):
            text = Path(path).read_text(errors="replace")
            if "Trigger: dump" in text:
                match = re.search(r"^summary: (\d+)", text, re.M)
                if match:
                    return int(match.group(1)) / cycles
    raise RuntimeError("callgrind wrote no dump")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", type=Path,
                        help="a checkout with its extensions built in place (default: this one)")
    parser.add_argument("--cycles", type=int, default=2000, help="measured connections (2000)")
    args = parser.parse_args()
    for tree in args.tree or [BENCH_DIR.parent]:
        per = instructions_per_connection(tree.resolve(), args.cycles)
        print(f"{tree}: {per:,.0f} instructions per connection")


if __name__ == "__main__":
    main()
