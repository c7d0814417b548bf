"""Instructions per message of the frame engine's hot paths, counted by callgrind.

Wall-clock figures on a shared machine move by tens of percent with the load; the number of
instructions a fixed workload executes does not.  Each scenario runs in one process, with no
sockets, at two round counts under ``valgrind --tool=callgrind``; the difference divided by
the messages of the extra rounds is the cost per message, start-up excluded:

- **broadcast**: 1,000 engines on one loop context; a round is one 32 B publish to all of
  them, then the end-of-turn write the loop context schedules (one writer call each).
  Per delivery.
- **broadcast-sink**: the same with the output taken at C level (a ``ByteSink``, as
  harpia's own socket transport does) instead of a ``bytes`` object and a writer call.
- **pipeline**: 100 engines whose handler echoes (``ws.send(message)``); a round feeds each
  one read of 16 masked 32 B frames.  Per message.
- **pingpong**: the same with one frame per read.  Per message.

The writer is ``len`` (a C function), so a transport's cost is not counted; the handler is a
Python function, as an application's.  ``--tree`` runs the same scenarios against other
builds (a checkout with its extensions built in place) in the same run, for an A/B:

    python benchmarks/engine_instructions.py --tree . --tree ../old-checkout

Engines from before the split into units (``Cork`` and ``publish`` in ``_frames``) work too.
"""
from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from collections.abc import Callable

SCENARIOS = {
    # name: (rounds, messages per round)
    "broadcast": (200, 1000),
    "broadcast-sink": (200, 1000),
    "pipeline": (200, 1600),
    "pingpong": (1000, 100),
}


def workload(scenario: str, rounds: int) -> None:
    from harpia import _frames

    try:
        from harpia._loop import LoopContext
        from harpia._publish import publish
    except ImportError:  # the single-module engine
        LoopContext = _frames.Cork  # type: ignore[attr-defined,misc]  # noqa: N806
        publish = _frames.publish  # type: ignore[attr-defined]

    pending: list[Callable[[], object]] = []
    context = LoopContext(pending.append)

    def end_of_turn() -> None:
        while pending:
            callbacks = pending[:]
            del pending[:]
            for callback in callbacks:
                callback()

    if scenario.startswith("broadcast"):
        if scenario == "broadcast-sink":
            from harpia._output import ByteSink  # takes the bytes at C level, keeps none
        engines = []
        for _ in range(1000):
            engine = _frames.FrameEngine()
            if scenario == "broadcast-sink":
                engine.attach(None, context, sink=ByteSink())
            else:
                engine.attach(len, context)
            engines.append(engine)
        subscribers = tuple(engines)
        message = b"x" * 32
        for _ in range(rounds):
            publish(subscribers, message)
            end_of_turn()
        assert all(e.messages_out == rounds for e in engines)
        return
    key = b"\x01\x02\x03\x04"
    payload = bytes(b ^ key[i % 4] for i, b in enumerate(b"y" * 32))
    read = (b"\x82\xa0" + key + payload) * (16 if scenario == "pipeline" else 1)
    engines = []
    for _ in range(100):
        engine = _frames.FrameEngine()
        engine.attach(len, context)
        engine.bind_message_handler(lambda ws, message: ws.send(message))
        engines.append(engine)
    for _ in range(rounds):
        for engine in engines:
            engine.feed(read)
        end_of_turn()
    assert all(e.messages_out == e.messages_in == rounds * len(read) // 38 for e in engines)


def instructions(tree: str, scenario: str, rounds: int) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "callgrind.out")
        env = dict(os.environ, PYTHONPATH=os.path.abspath(tree), PYTHONHASHSEED="0")
        subprocess.run(
            ["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", sys.executable,
             os.path.abspath(__file__), "--run", scenario, str(rounds)],
            env=env, check=True, capture_output=True,
        )
        with open(out) as f:
            match = re.search(r"^(?:summary|totals): (\d+)", f.read(), re.MULTILINE)
        if match is None:
            raise RuntimeError("callgrind wrote no instruction total")
        return int(match.group(1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tree", action="append", help="a checkout built in place (default .)")
    parser.add_argument("--scenarios", default=",".join(SCENARIOS))
    parser.add_argument("--run", nargs=2, metavar=("SCENARIO", "ROUNDS"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.run:
        workload(args.run[0], int(args.run[1]))
        return
    trees = args.tree or ["."]
    print("scenario   " + "".join(f"{t:>28}" for t in trees))
    for scenario in args.scenarios.split(","):
        rounds, per_round = SCENARIOS[scenario]
        cells = []
        for tree in trees:
            try:
                extra = instructions(tree, scenario, rounds) - instructions(tree, scenario, 0)
            except subprocess.CalledProcessError:   # e.g. a build without ByteSink
                cells.append(f"{'n/a':>28}")
                continue
            cells.append(f"{extra / (rounds * per_round):>28,.0f}")
        print(f"{scenario:<11}" + "".join(cells), flush=True)


if __name__ == "__main__":
    main()
