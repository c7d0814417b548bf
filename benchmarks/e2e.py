"""End-to-end benchmarks: real servers, driven over loopback by the C load generator.

One implementation shared by ``benchmarks/run`` (the markdown report) and
``benchmarks/test_e2e.py`` (pytest-benchmark). Each run starts one server
(``benchmarks/servers/<name>_server.py``, or ``bun_server.ts`` under Bun) pinned
to CPU 0, waits for its port, runs ``benchmarks/loadgen/wsload`` pinned to CPU 1,
and stops the server.

Bun is an optional anchor: ``$BUN`` if set, else ``bun`` on PATH, else
``~/.cache/harpia-bench/bun`` (installed there from npm on first use when npm is
available); without one, the bun column is "n/a".

Every server (``<name>_server.py --port P``, listening on 127.0.0.1 until
SIGTERM) must serve, on one port:
  /echo       send every message back, same type (text/binary), same bytes,
              in order (a fragmented echo is fine)
  /broadcast  send every message received to every connected /broadcast
              client, the sender included, each exactly once, in the order
              received; a client that has just completed its handshake may
              miss the first messages (wsload syncs before measuring)
and answer a client's close frame with a close frame. wsload offers no
extension (so RSV bits must stay clear), never expects a ping, fails on any
mismatch and on a connection the server closes early.
"""
from __future__ import annotations

import functools
import json
import os
import platform
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BENCH_DIR = Path(__file__).resolve().parent
REPO_ROOT = BENCH_DIR.parent
LOADGEN_DIR = BENCH_DIR / "loadgen"
LOADGEN_SRC = LOADGEN_DIR / "wsload.c"
WSLOAD = LOADGEN_DIR / "wsload"
#: wsload checks every Sec-WebSocket-Accept with the C code harpia's upgrade path uses.
WS_ACCEPT_H = REPO_ROOT / "harpia" / "_ws_accept.h"
SERVERS_DIR = BENCH_DIR / "servers"
RESULTS_DIR = BENCH_DIR / "results"

SERVERS = ("harpia", "harpia-busypoll", "harpia-nohist", "harpia-looptransport", "picows", "websockets", "aiohttp", "bun")
# A variant is a server run with extra arguments: name -> (server, arguments).
# harpia-busypoll: the loop keeps polling for 200 us after a read instead of sleeping
# (App(busy_poll=...), off by default): lower latency for CPU while traffic flows.
# harpia-nohist: without the latency histograms, to measure what they cost.
# harpia-looptransport: the event loop's own transports do the socket I/O
# (App(loop_transport=True)), to measure what harpia's own I/O gains.
VARIANTS = {"harpia-busypoll": ("harpia", ("--busy-poll", "0.0002")),
            "harpia-looptransport": ("harpia", ("--loop-transport",)),
            "harpia-nohist": ("harpia", ("--no-latency-histograms",))}
BASELINE = "picows"
HOST = "127.0.0.1"
SERVER_CPU, LOADGEN_CPU = 0, 1
BUSY_OTHER_PCT = 25.0  # CPU % used by the rest of the machine above which a report is flagged as disturbed
# CPU % (of one core, both CPUs summed) the hypervisor kept this VM's runnable vCPUs waiting
# (steal time) above which a report is flagged: the host, not this machine, was busy.
STEAL_PCT = 10.0

# What a Python server script needs; a failed import makes that server "n/a".
IMPORTS = {
    "harpia": "import uvloop; from harpia import harpia",
    "picows": "import uvloop, picows",
    "websockets": "import uvloop, websockets.asyncio.server",
    "aiohttp": "import uvloop, aiohttp.web",
}
# Servers that are not Python: name -> script in SERVERS_DIR (run by the runtime of that name).
SCRIPTS = {"bun": "bun_server.ts"}
BUN_VERSION = "1.4.5"  # what gets installed when no bun is found
BUN_CACHE = Path.home() / ".cache" / "harpia-bench" / "bun"  # npm install --prefix here


class BenchError(RuntimeError):
    """A server or load-generator run failed."""


# ---------------------------------------------------------------- scenarios


@dataclass(frozen=True)
class Metric:
    key: str  # key in wsload's JSON line
    label: str
    higher_is_better: bool = True


@dataclass(frozen=True)
class Scenario:
    name: str
    args: tuple[str, ...]  # wsload arguments
    quick_args: tuple[str, ...]  # replaces args under --quick (smaller connection counts)
    metrics: tuple[Metric, ...]
    messages: int | None  # fixed work for pytest (--messages); None: the scenario is fixed work already
    quick_messages: int | None = None
    timed: bool = True  # takes --duration/--warmup
    server_args: tuple[str, ...] = ()  # appended to the server's command line (e.g. --deflate)
    unsupported: tuple[tuple[str, str], ...] = ()  # (server, why) pairs that cannot run it

    def wsload_args(self, quick: bool = False) -> list[str]:
        return list(self.quick_args if quick else self.args)

    def fixed_messages(self, quick: bool = False) -> int | None:
        return self.quick_messages if quick and self.quick_messages else self.messages


MSG_S = Metric("msgs_per_s", "msg/s")
P50 = Metric("p50_us", "p50 µs", higher_is_better=False)
P99 = Metric("p99_us", "p99 µs", higher_is_better=False)


def _echo(mode: str, conns: int, size: int = 32, *extra: str) -> tuple[str, ...]:
    return ("--mode", mode, "--conns", str(conns), "--size", str(size), *extra)


SCENARIOS: tuple[Scenario, ...] = (
    Scenario("pingpong-1", _echo("pingpong", 1, 32, "--text"), _echo("pingpong", 1, 32, "--text"),
             (MSG_S, P50, P99), messages=20_000, quick_messages=2_000),
    Scenario("pingpong-100", _echo("pingpong", 100, 32, "--text"), _echo("pingpong", 20, 32, "--text"),
             (MSG_S,), messages=200_000, quick_messages=5_000),
    Scenario("pipeline-100x16", _echo("pipeline", 100, 32, "--depth", "16", "--text"),
             _echo("pipeline", 20, 32, "--depth", "16", "--text"),
             (MSG_S,), messages=1_000_000, quick_messages=10_000),
    Scenario("echo-1MiB-10", _echo("pingpong", 10, 1 << 20, "--binary"), _echo("pingpong", 4, 1 << 20, "--binary"),
             (Metric("mb_per_s", "MB/s"),), messages=3_000, quick_messages=100),
    Scenario("broadcast-1000", _echo("broadcast", 1000, 32, "--depth", "64", "--text"),
             _echo("broadcast", 100, 32, "--depth", "64", "--text"),
             (Metric("deliveries_per_s", "deliveries/s"),), messages=3_000, quick_messages=100),
    Scenario("connect", ("--mode", "connect", "--conns", "10"), ("--mode", "connect", "--conns", "10"),
             (Metric("conns_per_s", "conn/s"),), messages=10_000, quick_messages=500),
    Scenario("idle-10k", ("--mode", "idle", "--conns", "10000", "--settle", "1"),
             ("--mode", "idle", "--conns", "1000", "--settle", "0.3"),
             (Metric("kib_per_conn", "KiB/conn", higher_is_better=False),), messages=None, timed=False),
    # permessage-deflate: the servers run with --deflate (each library's own defaults: harpia
    # compresses from a fresh state and once per publish; websockets keeps a context per
    # connection; aiohttp compress=True).  The payload is JSON-like text, compressible.
    Scenario("echo-16KiB-deflate", _echo("pipeline", 10, 16384, "--depth", "4", "--text", "--json", "--deflate"),
             _echo("pipeline", 4, 16384, "--depth", "4", "--text", "--json", "--deflate"),
             (MSG_S, Metric("mb_per_s", "MB/s")), messages=20_000, quick_messages=1_000,
             server_args=("--deflate",), unsupported=(("picows", "no permessage-deflate"),)),
    Scenario("broadcast-1000-4KiB", _echo("broadcast", 1000, 4096, "--depth", "64", "--text", "--json"),
             _echo("broadcast", 100, 4096, "--depth", "64", "--text", "--json"),
             (Metric("deliveries_per_s", "deliveries/s"),), messages=1_000, quick_messages=100),
    Scenario("broadcast-1000-4KiB-deflate",
             _echo("broadcast", 1000, 4096, "--depth", "64", "--text", "--json", "--deflate"),
             _echo("broadcast", 100, 4096, "--depth", "64", "--text", "--json", "--deflate"),
             (Metric("deliveries_per_s", "deliveries/s"),), messages=1_000, quick_messages=100,
             server_args=("--deflate",), unsupported=(("picows", "no permessage-deflate"),)),
)
SCENARIOS_BY_NAME = {s.name: s for s in SCENARIOS}


# ---------------------------------------------------------------- load generator


def build_loadgen(force: bool = False) -> Path:
    """Compile wsload if it is missing or older than its sources."""
    sources = [LOADGEN_SRC, *LOADGEN_DIR.glob("*.h"), WS_ACCEPT_H]
    newest = max(p.stat().st_mtime for p in sources)
    if not force and WSLOAD.exists() and WSLOAD.stat().st_mtime >= newest:
        return WSLOAD
    cc = os.environ.get("CC", "gcc")
    tmp = WSLOAD.with_name(f".wsload.{os.getpid()}")
    cmd = [cc, "-O2", "-o", str(tmp), str(LOADGEN_SRC), "-lz"]  # zlib: --deflate
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise BenchError(f"building wsload failed: {' '.join(cmd)}\n{proc.stderr}")
    os.replace(tmp, WSLOAD)  # atomic: concurrent builders never see half a binary
    return WSLOAD


def pin(cpu: int) -> list[str]:
    """A taskset prefix pinning to cpu, or nothing where that is impossible."""
    if shutil.which("taskset") and len(os.sched_getaffinity(0)) >= 2:
        return ["taskset", "-c", str(cpu)]
    return []


# ---------------------------------------------------------------- servers


def server_env() -> dict[str, str]:
    """Servers import harpia from this working tree (built in place or installed editable)."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONHASHSEED", "0")
    env.setdefault("DO_NOT_TRACK", "1")  # bun: no crash reports or telemetry
    return env


def server_script(name: str) -> Path:
    return SERVERS_DIR / SCRIPTS.get(name, f"{name}_server.py")


def _is_elf(path: Path) -> bool:
    try:
        with open(path, "rb") as f:
            return f.read(4) == b"\x7fELF"
    except OSError:
        return False


def _native_bun(path: Path) -> Path | None:
    """The native bun executable behind path (a symlink, or npm's bin entry), else None.

    The server must be bun itself, exec'd by taskset, not a wrapper: the idle scenario
    reads the RSS of the pid it started, and SIGTERM must reach bun.
    """
    real = path.resolve()
    if _is_elf(real):
        return real
    # A wrapper script from the npm package (postinstall skipped): the native binary
    # lives in the platform package, node_modules/@oven/bun-<os>-<arch>[-musl|-baseline]/bin/bun.
    for parent in real.parents:
        if parent.name == "node_modules":
            for candidate in sorted(parent.glob("@oven/bun-*/bin/bun")):
                if _is_elf(candidate) and os.access(candidate, os.X_OK):
                    return candidate
            break
    return None


def _npm_error(stderr: str) -> str:
    """The telling line of npm's error output (its code and first message), not the stack or log path."""
    lines = [ln.split(" ", 2)[-1].strip() for ln in stderr.splitlines() if ln.startswith(("npm error ", "npm ERR! "))]
    code = next((ln for ln in lines if ln.startswith("code ")), "")
    skip = ("code ", "syscall ", "errno ", "at ", "A complete log")
    detail = next((ln for ln in lines if ln and not ln.startswith(skip)), "")
    return "; ".join(x for x in (code, detail) if x)[:300]


def _install_bun() -> str | None:
    """npm install bun into BUN_CACHE; None on success, else why it failed."""
    npm = shutil.which("npm")
    if npm is None:
        return "no bun found (set BUN, put bun on PATH, or install npm to fetch it)"
    BUN_CACHE.parent.mkdir(parents=True, exist_ok=True)
    tmp = BUN_CACHE.with_name(f".bun.{os.getpid()}")
    cmd = [npm, "install", "--prefix", str(tmp), "--no-audit", "--no-fund", "--no-save", "--loglevel=error",
           f"bun@{BUN_VERSION}"]
    print(f"installing bun {BUN_VERSION} into {BUN_CACHE} (npm)", file=sys.stderr)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=300)
    except subprocess.TimeoutExpired:
        shutil.rmtree(tmp, ignore_errors=True)
        return f"npm install bun@{BUN_VERSION} timed out"
    if proc.returncode != 0:
        shutil.rmtree(tmp, ignore_errors=True)
        return f"npm install bun@{BUN_VERSION} failed: {_npm_error(proc.stderr) or f'exit {proc.returncode}'}"
    try:
        os.rename(tmp, BUN_CACHE)  # whole prefix at once: concurrent installers never see half of one
    except OSError:  # another process installed it meanwhile
        shutil.rmtree(tmp, ignore_errors=True)
    return None


@functools.lru_cache(maxsize=None)
def find_bun(install: bool = True) -> tuple[Path | None, str]:
    """(the native bun executable, its version) or (None, why not).

    $BUN if set, else bun on PATH, else BUN_CACHE; when none exists and install is
    true, npm installs bun@BUN_VERSION into BUN_CACHE (once).
    """
    cached = BUN_CACHE / "node_modules" / ".bin" / "bun"
    if os.environ.get("BUN"):
        where, path = "BUN", Path(os.environ["BUN"]).expanduser()
        if not path.is_file():
            return None, f"BUN={path} does not exist"
    elif shutil.which("bun"):
        where, path = "PATH", Path(shutil.which("bun"))  # type: ignore[arg-type]
    else:
        where, path = "cache", cached
        if not path.exists():
            if not install:
                return None, "no bun found"
            why = _install_bun()
            if why:
                return None, why
            if not path.exists():
                return None, f"npm installed bun@{BUN_VERSION} but {path} is missing (remove {BUN_CACHE} and retry)"
    native = _native_bun(path)
    if native is None:
        return None, (f"{path} (from {where}) is not a native bun executable (a wrapper script?); "
                      "set BUN to the bun binary")
    try:
        proc = subprocess.run([str(native), "--version"], capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return None, f"{native} --version failed: {exc}"
    if proc.returncode != 0:
        return None, f"{native} --version exited with {proc.returncode}: {proc.stderr.strip()[-200:]}"
    return native, proc.stdout.strip()


def server_command(name: str, port: int, args: tuple[str, ...] = ()) -> list[str]:
    """The server's own command line (no pinning prefix); the program is exec'd, not wrapped."""
    if name in VARIANTS:
        name, extra = VARIANTS[name]
        args = (*extra, *args)
    script = str(server_script(name))
    if name == "bun":
        bun, why = find_bun()
        if bun is None:
            raise BenchError(f"bun: {why}")
        return [str(bun), script, "--port", str(port), *args]
    return [sys.executable, script, "--port", str(port), *args]


@functools.lru_cache(maxsize=None)
def server_unavailable(name: str) -> str | None:
    """None when the server can run here, else why not."""
    name = VARIANTS.get(name, (name, ()))[0]
    if name not in IMPORTS and name not in SCRIPTS:
        return f"unknown server (known: {', '.join(SERVERS)})"
    script = server_script(name)
    if not script.exists():
        return f"{script.name} is missing"
    if name == "bun":
        bun, why = find_bun()
        return None if bun else why
    proc = subprocess.run([sys.executable, "-c", IMPORTS[name]], capture_output=True, text=True,
                          env=server_env(), cwd=SERVERS_DIR, timeout=60)
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return lines[-1] if lines else f"import failed (exit {proc.returncode})"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind((HOST, 0))
        return s.getsockname()[1]


def _raise_nofile() -> None:  # runs in the server's process before exec
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def _machine_cpu_seconds() -> tuple[float, float]:
    """(busy, stolen): CPU time all CPUs spent busy since boot, and the time their vCPUs
    were ready to run but the hypervisor ran something else (/proc/stat's steal column).
    Busy excludes idle, iowait and steal."""
    vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:9]]
    hz = os.sysconf("SC_CLK_TCK")
    return (sum(vals) - vals[3] - vals[4] - vals[7]) / hz, vals[7] / hz


def _machine_busy_seconds() -> float:
    """Busy or stolen CPU time since boot: either means the machine is not quiet."""
    busy, stolen = _machine_cpu_seconds()
    return busy + stolen


def wait_for_quiet(max_wait: float, sample: float = 0.5) -> float:
    """Wait up to max_wait s until the machine is nearly idle; returns the last busy % (of one core)."""
    deadline = time.monotonic() + max_wait
    while True:
        busy0 = _machine_busy_seconds()
        time.sleep(sample)
        busy = 100.0 * (_machine_busy_seconds() - busy0) / sample
        if busy < BUSY_OTHER_PCT or time.monotonic() >= deadline:
            return busy


def _children_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _cpu_seconds(pid: int) -> float | None:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime + stime


class ServerProcess:
    """One server, pinned to SERVER_CPU, listening on a fresh port."""

    def __init__(self, name: str, args: tuple[str, ...] = ()) -> None:
        self.name = name
        self.args = args
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = tempfile.TemporaryFile()

    def start(self, timeout: float = 20.0) -> ServerProcess:
        cmd = [*pin(SERVER_CPU), *server_command(self.name, self.port, self.args)]
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.log, stderr=subprocess.STDOUT,
                                     env=server_env(), cwd=SERVERS_DIR, preexec_fn=_raise_nofile)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise BenchError(f"{self.name} server exited with {self.proc.returncode} before listening:\n"
                                 f"{self.log_tail()}")
            try:
                with socket.create_connection((HOST, self.port), timeout=0.5):
                    return self
            except OSError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise BenchError(f"{self.name} server did not listen on port {self.port} within {timeout:.0f} s:\n"
                                     f"{self.log_tail()}") from None
                time.sleep(0.02)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid  # taskset execs the server, so this is the server itself

    def cpu_seconds(self) -> float | None:
        return _cpu_seconds(self.pid)

    def log_tail(self, lines: int = 15) -> str:
        self.log.seek(0)
        text = self.log.read().decode(errors="replace").strip().splitlines()
        return "\n".join(text[-lines:])

    def stop(self) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None
        self.log.close()

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# ---------------------------------------------------------------- one run


@dataclass
class RunConfig:
    duration: float = 5.0
    warmup: float = 1.0
    quick: bool = False
    fixed_work: bool = False  # --messages instead of --duration (pytest)


def wsload_command(scenario: Scenario, port: int, server_pid: int, cfg: RunConfig) -> list[str]:
    args = [*pin(LOADGEN_CPU), str(WSLOAD), *scenario.wsload_args(cfg.quick), "--host", HOST, "--port", str(port)]
    if scenario.timed:
        messages = scenario.fixed_messages(cfg.quick) if cfg.fixed_work else None
        if messages:
            args += ["--messages", str(messages), "--warmup", str(min(cfg.warmup, 0.5))]
        else:
            args += ["--duration", str(cfg.duration), "--warmup", str(cfg.warmup)]
    return [*args, "--server-pid", str(server_pid)]  # idle: its RSS; the others: its CPU over the window


def run_wsload(server: ServerProcess, scenario: Scenario, cfg: RunConfig) -> dict[str, Any]:
    """Drive a running server through one scenario; wsload's JSON plus server_cpu_pct."""
    cmd = wsload_command(scenario, server.port, server.pid, cfg)
    timeout = 600.0 if cfg.fixed_work or not scenario.timed else cfg.duration + cfg.warmup + 120
    cpu0, kids0, t0 = server.cpu_seconds(), _children_cpu_seconds(), time.monotonic()
    busy0, stolen0 = _machine_cpu_seconds()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        raise BenchError(f"wsload did not finish within {timeout:.0f} s: {' '.join(cmd)}") from None
    wall, cpu1 = time.monotonic() - t0, server.cpu_seconds()
    busy1, stolen1 = _machine_cpu_seconds()
    busy, stolen, wsload_cpu = busy1 - busy0, stolen1 - stolen0, _children_cpu_seconds() - kids0
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    result: dict[str, Any] = json.loads(lines[-1]) if lines else {}
    if proc.returncode != 0 or not lines:
        why = result.get("error") or proc.stderr.strip() or f"exit {proc.returncode}"
        log = server.log_tail()
        raise BenchError(f"{scenario.name} on {server.name}: wsload exit {proc.returncode}: {why}"
                         + (f"\n--- server log ---\n{log}" if log else ""))
    if cpu0 is not None and cpu1 is not None and wall > 0:
        result["server_cpu_pct"] = round(100.0 * (cpu1 - cpu0) / wall, 1)  # over the whole wsload run
        # Everything else the machine did meanwhile (other processes, unattributed softirq time):
        # more than a few % means the numbers are disturbed.
        result["other_cpu_pct"] = round(max(0.0, 100.0 * (busy - (cpu1 - cpu0) - wsload_cpu) / wall), 1)
    if wall > 0:
        # Time the host kept this VM's vCPUs waiting: wake-ups arrive late, rates drop and
        # move between runs, while the CPU per message stays closer to the truth.
        result["steal_cpu_pct"] = round(100.0 * stolen / wall, 1)
    result["server_cpu_us_per_unit"] = cpu_us_per_unit(result)
    if proc.stderr.strip():
        result["stderr"] = proc.stderr.strip()
    result["command"] = " ".join(cmd)
    return result


def work_done(result: dict[str, Any]) -> int | None:
    """What the server did over the measured window, in the unit of the scenario's rate:
    deliveries for broadcast, connections for connect, messages echoed otherwise."""
    mode = result.get("mode")
    if mode == "idle":
        return None
    key = "deliveries" if mode == "broadcast" else "messages"  # connect counts cycles in "messages"
    return int(result[key]) if result.get(key) else None


def cpu_us_per_unit(result: dict[str, Any]) -> float | None:
    """Server CPU time (its process tree, from /proc, over the measured window) per unit of work, in µs."""
    units, cpu_s = work_done(result), result.get("server_cpu_s")
    if not units or cpu_s is None:
        return None
    return 1e6 * float(cpu_s) / units


def scenario_unsupported(scenario: Scenario, server_name: str) -> str | None:
    """Why ``server_name`` cannot run ``scenario`` (a feature it lacks), else None."""
    return dict(scenario.unsupported).get(server_name)


def run_one(server_name: str, scenario: Scenario, cfg: RunConfig) -> dict[str, Any]:
    """Start the server, run one scenario against it, stop it."""
    with ServerProcess(server_name, scenario.server_args) as server:
        return run_wsload(server, scenario, cfg)


# ---------------------------------------------------------------- report


@dataclass
class Cell:
    values: dict[str, list[float]] = field(default_factory=dict)  # metric key -> one value per repetition
    loadgen_cpu: list[float] = field(default_factory=list)
    server_cpu: list[float] = field(default_factory=list)
    other_cpu: list[float] = field(default_factory=list)
    steal_cpu: list[float] = field(default_factory=list)
    cpu_per_unit: list[float] = field(default_factory=list)  # server CPU µs per message/delivery/connection
    errors: list[str] = field(default_factory=list)

    def add(self, scenario: Scenario, result: dict[str, Any]) -> None:
        for m in scenario.metrics:
            if result.get(m.key) is not None:
                self.values.setdefault(m.key, []).append(float(result[m.key]))
        if result.get("loadgen_cpu_pct") is not None:
            self.loadgen_cpu.append(float(result["loadgen_cpu_pct"]))
        if result.get("server_cpu_pct") is not None:
            self.server_cpu.append(float(result["server_cpu_pct"]))
        if result.get("other_cpu_pct") is not None:
            self.other_cpu.append(float(result["other_cpu_pct"]))
        if result.get("steal_cpu_pct") is not None:
            self.steal_cpu.append(float(result["steal_cpu_pct"]))
        if result.get("server_cpu_us_per_unit") is not None:
            self.cpu_per_unit.append(float(result["server_cpu_us_per_unit"]))

    def median(self, key: str) -> float | None:
        vals = self.values.get(key)
        return statistics.median(vals) if vals else None


def fmt_value(v: float) -> str:
    if v >= 100:
        return f"{v:,.0f}"
    if v >= 10:
        return f"{v:.1f}"
    return f"{v:.2f}"


def _median_or_dash(vals: list[float]) -> str:
    return f"{statistics.median(vals):.0f}" if vals else "–"


def render_markdown(scenarios: list[Scenario], servers: list[str], cells: dict[tuple[str, str], Cell],
                    unavailable: dict[str, str], cfg: RunConfig, repeat: int, command: str) -> str:
    out = [f"# End-to-end WebSocket benchmark, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}", ""]
    mode = "quick smoke test, " if cfg.quick else ""
    timing = f"{mode}median of {repeat} run(s), {cfg.warmup:g} s warmup + {cfg.duration:g} s measured"
    out += [f"{timing}; servers pinned to CPU {SERVER_CPU}, load generator to CPU {LOADGEN_CPU}. "
            f"Ratio: value / {BASELINE} (↑ higher is better, ↓ lower is better).", ""]
    busiest = max((max(c.other_cpu) for c in cells.values() if c.other_cpu), default=0.0)
    if busiest > BUSY_OTHER_PCT:
        out += [f"**Warning: other work used up to {busiest:.0f}% of a core during these runs (see the CPU "
                "table); the figures are disturbed. Re-run on a quiet machine.**", ""]
    stolen = max((max(c.steal_cpu) for c in cells.values() if c.steal_cpu), default=0.0)
    if stolen > STEAL_PCT:
        out += [f"**Warning: the host kept this machine's CPUs waiting (steal time) up to {stolen:.0f}% of a "
                "core during these runs (see the CPU table): wake-ups came late, so rates are low and move "
                "between runs; the server CPU per unit is the steadier figure.**", ""]
    out.append("| scenario | metric | " + " | ".join(servers) + " |")
    out.append("|---|---|" + "---:|" * len(servers))
    for sc in scenarios:
        for m in sc.metrics:
            base = cells.get((sc.name, BASELINE))
            base_v = base.median(m.key) if base else None
            row = [sc.name, f"{m.label} {'↑' if m.higher_is_better else '↓'}"]
            for srv in servers:
                cell = cells.get((sc.name, srv))
                v = cell.median(m.key) if cell else None
                if srv in unavailable:
                    row.append("n/a")
                elif v is None:
                    row.append("error" if cell and cell.errors else "–")
                elif base_v:
                    row.append(f"{fmt_value(v)} ({v / base_v:.2f}×)")
                else:
                    row.append(fmt_value(v))
            out.append("| " + " | ".join(row) + " |")
        if sc.timed:
            out.append(_cpu_row(sc, servers, cells, unavailable))
    out += ["", "Server CPU per unit (↓): the server's process tree (utime + stime from /proc) over the "
            "measured window, divided by the messages echoed (deliveries for broadcast, connections for "
            "connect); a saturated load generator cannot hide the server's cost in it."]
    out += ["", "CPU use (median %, of one core): load generator over the measured window / server / rest of "
            "the machine / stolen by the host, the last three over the whole load-generator run. A large third "
            "number means something else was running; a large fourth, that the hypervisor kept the machine's "
            "CPUs waiting (steal time). Either way the figures above are disturbed.", ""]
    out.append("| scenario | " + " | ".join(servers) + " |")
    out.append("|---|" + "---:|" * len(servers))
    for sc in scenarios:
        row = [sc.name]
        for srv in servers:
            cell = cells.get((sc.name, srv))
            if srv in unavailable or cell is None:
                row.append("n/a")
            else:
                row.append(f"{_median_or_dash(cell.loadgen_cpu)} / {_median_or_dash(cell.server_cpu)}"
                           f" / {_median_or_dash(cell.other_cpu)} / {_median_or_dash(cell.steal_cpu)}")
        out.append("| " + " | ".join(row) + " |")
    out += ["", "Scenarios (wsload arguments):", ""]
    for sc in scenarios:
        out.append(f"- `{sc.name}`: `{' '.join(sc.wsload_args(cfg.quick))}`")
    notes = [f"- {srv}: n/a: {why}" for srv, why in unavailable.items() if srv in servers]
    for (sc_name, srv), cell in cells.items():
        for err in cell.errors:
            notes.append(f"- {sc_name} / {srv}: failed: {err.splitlines()[0]}")
    if notes:
        out += ["", "Notes:", "", *notes]
    out += ["", "Environment:", "", *[f"- {line}" for line in environment()], f"- command: `{command}`", ""]
    return "\n".join(out)


def _cpu_row(sc: Scenario, servers: list[str], cells: dict[tuple[str, str], Cell], unavailable: dict[str, str]) -> str:
    unit = "delivery" if sc.args[1] == "broadcast" else "conn" if sc.args[1] == "connect" else "msg"
    base = cells.get((sc.name, BASELINE))
    base_v = statistics.median(base.cpu_per_unit) if base and base.cpu_per_unit else None
    row = [sc.name, f"server CPU µs/{unit} ↓"]
    for srv in servers:
        cell = cells.get((sc.name, srv))
        if srv in unavailable:
            row.append("n/a")
        elif cell is None or not cell.cpu_per_unit:
            row.append("–")
        else:
            v = statistics.median(cell.cpu_per_unit)
            row.append(f"{fmt_value(v)} ({v / base_v:.2f}×)" if base_v else fmt_value(v))
    return "| " + " | ".join(row) + " |"


def environment() -> list[str]:
    from importlib import metadata

    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = []
    for pkg in ("harpia", "picows", "websockets", "aiohttp", "uvloop"):
        try:
            versions.append(f"{pkg} {metadata.version(pkg)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{pkg} (not installed)")
    bun, bun_version = find_bun(install=False)
    return [f"{cpu}, {os.cpu_count()} CPUs, {platform.system()} {platform.release()}",
            f"Python {platform.python_version()}; " + ", ".join(versions),
            f"Bun {bun_version}" if bun else "Bun (not found)"]
