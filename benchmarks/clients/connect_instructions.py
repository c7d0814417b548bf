"""Client instructions per connection in the connect scenario, counted by callgrind.

The server (Bun's, or harpia's when Bun cannot be had) runs pinned to its own CPU, outside
valgrind; the client runs under ``valgrind --tool=callgrind`` doing what the ``connect``
scenario does (4 workers: connect, handshake, close handshake, again, through the client's
own ``connect_and_close``).  A few hundred connections warm it up unmeasured, then the
counters are zeroed, ``--cycles`` connections go through and the counters are dumped: the
instructions in the dump divided by the cycles are the client's user-space cost of one
connection.  The kernel's share is not counted (``strace -c -f`` counts the system calls).

A fixed workload executes the same instructions whatever the machine's load, so an A/B
holds on a shared machine where timings do not.  ``--tree`` measures other checkouts (with
their extensions built in place) in the same run; ``--keep DIR`` keeps the dumps for
``callgrind_annotate``:

    python benchmarks/clients/connect_instructions.py --clients harpia,picows
    python benchmarks/clients/connect_instructions.py --tree . --tree ../old-checkout
"""
from __future__ import annotations

import argparse
import asyncio
import glob
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CLIENTS_DIR = Path(__file__).resolve().parent
sys.path.insert(0, str(CLIENTS_DIR))
sys.path.insert(0, str(CLIENTS_DIR.parent))


def _callgrind(command: str) -> None:
    subprocess.run(["callgrind_control", command, str(os.getpid())], check=True,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


async def _cycles(connect_and_close: object, url: str, args: argparse.Namespace,
                  cycles: int) -> None:
    left = cycles

    async def worker() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await connect_and_close(url, args)  # type: ignore[operator]
    await asyncio.gather(*(worker() for _ in range(4)))


def _workload(client: str, url: str, warmup: int, cycles: int) -> None:
    """In the process under callgrind: warm up, zero, the measured cycles, dump."""
    import uvloop
    module = __import__(f"{client}_client")
    args = argparse.Namespace(busy_poll=0.0)

    async def main() -> None:
        await _cycles(module.connect_and_close, url, args, warmup)
        _callgrind("-z")
        await _cycles(module.connect_and_close, url, args, cycles)
        _callgrind("-d")
    uvloop.run(main())


def instructions_per_connection(client: str, tree: Path, port: int, cycles: int,
                                keep: Path | None) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        env = dict(os.environ, PYTHONPATH=str(tree))
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}.%p", sys.executable,
             __file__, "--workload", client, "--url", f"ws://127.0.0.1:{port}/echo",
             "--cycles", str(cycles)],
            env=env, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for path in glob.glob(out + ".*"):
            text = Path(path).read_text(errors="replace")
            if "Trigger: Client Request: dump" in text or "Trigger: dump" in text \
                    or re.search(r"^trigger: .*dump", text, re.M | re.I):
                match = re.search(r"^summary: (\d+)", text, re.M)
                if match:
                    if keep is not None:
                        keep.mkdir(parents=True, exist_ok=True)
                        shutil.copy(path, keep / f"callgrind.{client}.{tree.name}")
                    return int(match.group(1)) / cycles
    raise RuntimeError("callgrind wrote no dump")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", default="harpia", help="harpia,picows,websockets")
    parser.add_argument("--tree", action="append", type=Path,
                        help="a checkout with its extensions built in place (default: this "
                             "one); harpia's client only")
    parser.add_argument("--cycles", type=int, default=2000, help="measured connections (2000)")
    parser.add_argument("--server", default="bun", choices=("bun", "harpia"))
    parser.add_argument("--keep", type=Path, help="copy the dumps into this directory")
    parser.add_argument("--workload", help=argparse.SUPPRESS)
    parser.add_argument("--url", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.workload:
        _workload(args.workload, args.url, 300, args.cycles)
        return
    import e2e
    why = e2e.server_unavailable(args.server)
    if why:
        sys.exit(f"the {args.server} server is unavailable: {why}")
    trees = [t.resolve() for t in args.tree or [CLIENTS_DIR.parent.parent]]
    with e2e.ServerProcess(args.server) as server:
        for client in args.clients.split(","):
            for tree in trees if client == "harpia" else trees[:1]:
                per = instructions_per_connection(client, tree, server.port, args.cycles,
                                                  args.keep)
                label = f"{client} ({tree})" if client == "harpia" else client
                print(f"{label}: {per:,.0f} instructions per connection", flush=True)


if __name__ == "__main__":
    main()
