"""``app.listen(workers=N)``: N processes serving one port, supervised by the parent.

Each worker is a *forked* copy of the parent (``multiprocessing`` with the "fork" start
method), so the app works wherever it was defined: in the ``__main__`` of a script, with
lambdas and closures as handlers, nothing is pickled or re-imported.  The price of fork:
call ``listen(workers=N)`` before starting threads or an event loop in the parent, and
create per-process resources (database pools, clients) in the workers, not at import time.
Linux and other Unixes with ``SO_REUSEPORT``; not on Windows.

Every worker runs one listener (``reload.serve_worker``: the single-process serving path,
plus SIGHUP) on its slot's own socket, bound with ``SO_REUSEPORT``: the kernel spreads new
connections over the slots' accept queues (with ``unix=``/``sock=``, all the workers
accept from the one socket the parent holds).  The parent does not serve; it

* binds the address first (``SO_REUSEPORT``, not listening) so that a busy port fails once,
  in the parent, and ``port=0`` becomes one free port shared by all workers;
* makes and holds each slot's listening socket, so that the socket outlives the worker
  using it: a reload's new worker accepts from the socket the old one used, and a worker
  restarted at once finds the connections queued while it was down.  Closing a
  ``SO_REUSEPORT`` listener would reset the connections in its queue, and a connection
  the kernel assigned to it a moment before, which no drain can take in time.  (A slot
  whose worker keeps dying fast is closed while its worker waits to restart: the kernel
  then sends its share to the others.);
* starts the workers and waits until every one listens; if one fails to start (the port,
  TLS files, Redis unreachable for a ``pubsub`` backplane, ...), it stops the others and
  raises that worker's exception;
* restarts a worker that dies, with a warning in the log (``logging.getLogger("harpia")``);
  one that dies within ``FAST_FAILURE`` seconds of starting waits before its restart
  (0.5 s, doubling while it keeps dying that fast, up to 30 s);
* on SIGHUP replaces the workers one by one: a new worker starts and listens, then the
  old one stops accepting and closes its clients with 1012 (harpia/reload.py);
* on SIGINT or SIGTERM sends SIGTERM to every worker (each closes its connections with 1001,
  as a single process does), waits ``close_timeout + 5`` seconds, kills what is left, and
  returns.  (On Linux a worker also stops gracefully if the parent itself is killed.)

Workers share no memory: ``app.websocket.connections`` and ``subscriber_count`` are per
worker, and without a backplane ``app.publish`` in one worker reaches only that worker's
connections.  ``harpia(pubsub="redis://...")`` makes a publish reach all of them.
"""
from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .errors import ConfigurationError
from .worker_metrics import make_directory, remove_directory, retire_file

if TYPE_CHECKING:
    from .reload import WorkerApp

__all__ = ["run_workers"]

logger = logging.getLogger("harpia")

#: A worker that dies sooner than this after starting is restarted with a growing delay.
FAST_FAILURE = 5.0
MAX_RESTART_DELAY = 30.0
#: How long a worker may take to start listening (a backplane connects within this too).
START_TIMEOUT = 60.0
#: The accept queue of each slot's socket, as a single listener's.
BACKLOG = 1024


def run_workers(
    app: WorkerApp,
    *,
    host: str,
    port: int,
    tls: Mapping[str, Any] | ssl.SSLContext | None,
    workers: int,
    unix: str | None = None,
    sock: socket.socket | None = None,
    listener_options: Mapping[str, Any] | None = None,
) -> None:
    """Serve ``app`` with ``workers`` processes on ``host:port`` until SIGINT/SIGTERM.

    With ``unix=`` or ``sock=`` (systemd, ``--fd``) the workers share that one listening
    socket instead of binding their own.  SIGHUP replaces the workers one by one (see
    harpia/reload.py)."""
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigurationError(f"workers must be a positive integer, got {workers!r}")
    if sys.platform == "win32" or "fork" not in multiprocessing.get_all_start_methods():
        raise ConfigurationError("workers > 1 needs fork(): not available on this platform")
    if not hasattr(socket, "SO_REUSEPORT"):
        raise ConfigurationError("workers > 1 needs SO_REUSEPORT: not available on this platform")
    from .tls import make_ssl_context

    # Load certificates once, here: a bad path fails before any process starts.
    context = make_ssl_context(tls)
    if app.hub.backplane is None:
        logger.info("%d workers without pubsub: app.publish reaches only the connections of "
                    "the worker that publishes", workers)
    options = dict(listener_options or {})
    if unix is not None or sock is not None:
        from .sockets import bind_unix, unlink_unix

        shared = sock if sock is not None else bind_unix(unix or "", 1024)
        inode = os.stat(unix).st_ino if unix is not None else None
        try:
            supervisor = _Supervisor(app, host, 0, context, workers, None,
                                     {"sock": shared, **options})
            supervisor.run()
        finally:
            if unix is not None and inode is not None:
                shared.close()
                unlink_unix(unix, inode)
        return
    reservation = _reserve(host, port)
    try:
        supervisor = _Supervisor(app, host, int(reservation.getsockname()[1]), context, workers,
                                 reservation, options)
        supervisor.run()
    finally:
        reservation.close()


def _reserve(host: str, port: int) -> socket.socket:
    """Bind (without listening) with SO_REUSEPORT: checks the address, and holds the port
    (the one the kernel picked, for port 0) while workers come and go."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        if family == socket.AF_INET6 and hasattr(socket, "IPPROTO_IPV6"):
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


class _Worker:
    __slots__ = ("index", "process", "conn", "started_at", "ready")

    def __init__(self, index: int, process: Any, conn: multiprocessing.connection.Connection) -> None:
        self.index = index
        self.process = process
        self.conn: multiprocessing.connection.Connection | None = conn
        self.started_at = time.monotonic()
        self.ready = False

    @property
    def pid(self) -> int:
        return int(self.process.pid)


class _Supervisor:
    def __init__(self, app: WorkerApp, host: str, port: int, tls: ssl.SSLContext | None,
                 count: int, reservation: socket.socket | None, where: dict[str, Any]) -> None:
        self.app = app
        #: Listener keyword arguments of every worker (a shared ``sock``, PROXY protocol...).
        self.where = where
        self.reload_requested = False
        #: Workers replaced by a reload, closing their clients; not restarted when they exit.
        self.retiring: list[_Worker] = []
        #: Where the workers publish their counters for each other's scrapes.
        self.metrics_dir = make_directory()
        self.host = host
        self.port = port
        self.tls = tls
        self.count = count
        self.reservation = reservation
        #: Each slot's listening sockets (one per address of host), for TCP: see above.
        self.slots: dict[int, list[socket.socket]] = {}
        self.context = multiprocessing.get_context("fork")
        self.workers: dict[int, _Worker] = {}
        self.delays = [0.0] * count          # the next restart delay of each slot
        self.restart_at: dict[int, float] = {}
        self.wake_r, self.wake_w = os.pipe()
        os.set_blocking(self.wake_r, False)
        os.set_blocking(self.wake_w, False)
        self.stopping = False

    # ------------------------------------------------------------------ signals

    def _on_signal(self, signum: int, frame: object) -> None:
        if os.getpid() != self.parent_pid:  # a fork that has not reset its handlers yet
            return
        if signum == signal.SIGHUP:
            self.reload_requested = True
        else:
            self.stopping = True
        try:
            os.write(self.wake_w, b"x")
        except OSError:  # pragma: no cover - the pipe is full: a wake-up is pending anyway
            pass

    # ------------------------------------------------------------------ processes

    def _spawn(self, index: int) -> _Worker:
        where = self.where
        parent_sockets: tuple[int, ...] = ()
        if self.reservation is not None:    # first: a failure here leaves no pipe behind
            where = {**where, "sock": self._slot_sockets(index)}
            # Another slot's socket left open in this worker would keep that slot's queue
            # alive after the parent closes it (see _close_slot).
            parent_sockets = (self.reservation.fileno(), *(
                sock.fileno() for other, socks in self.slots.items() if other != index
                for sock in socks))
        receiver, sender = self.context.Pipe(duplex=False)
        parent_fds = (self.wake_r, self.wake_w, receiver.fileno(), *parent_sockets)
        process = self.context.Process(
            target=_worker_main,
            args=(self.app, self.host, self.port, self.tls, sender, parent_fds, os.getpid(),
                  where, (self.metrics_dir, index)),
            name=f"harpia-worker-{index}",
            daemon=False,
        )
        try:
            process.start()
        except BaseException:
            receiver.close()
            raise
        finally:
            sender.close()
        worker = self.workers[index] = _Worker(index, process, receiver)
        return worker

    def _slot_sockets(self, index: int) -> list[socket.socket]:
        if index not in self.slots:
            from .sockets import bind_tcp

            self.slots[index] = bind_tcp(self.host, self.port, reuse_port=True, backlog=BACKLOG)
        return self.slots[index]

    def _close_slot(self, index: int) -> None:
        for sock in self.slots.pop(index, []):
            sock.close()

    def run(self) -> None:
        self.parent_pid = os.getpid()
        previous: dict[signal.Signals, Any] = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                previous[sig] = signal.signal(sig, self._on_signal)
        try:
            self._start_all()
            if not self.stopping:
                self._announce()
                self._supervise()
        finally:
            self._stop_all()
            for sig, handler in previous.items():
                signal.signal(sig, handler)
            for index in list(self.slots):
                self._close_slot(index)
            remove_directory(self.metrics_dir)
            os.close(self.wake_r)
            os.close(self.wake_w)

    def _announce(self) -> None:
        scheme = "wss" if self.tls is not None else "ws"
        host = self.host if ":" not in self.host else f"[{self.host}]"
        where = f"{scheme}://{host}:{self.port}"
        shared = self.where.get("sock")
        if shared is not None:
            name = shared.getsockname()
            where = f"{scheme}://{name[0]}:{name[1]}" if isinstance(name, tuple) else f"{scheme}+unix://{name}"
        pids = ", ".join(str(w.pid) for w in self.workers.values())
        line = f"harpia listening on {where} with {self.count} workers (pids {pids})"
        if logger.hasHandlers():
            logger.info("%s", line)
        else:
            print(line, flush=True)

    def _start_all(self) -> None:
        for index in range(self.count):
            self._spawn(index)
        deadline = time.monotonic() + START_TIMEOUT
        while not self.stopping and not all(w.ready for w in self.workers.values()):
            waiting: list[Any] = [self.wake_r]
            for worker in self.workers.values():
                waiting.append(worker.process.sentinel)
                if worker.conn is not None:
                    waiting.append(worker.conn)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise RuntimeError(f"the workers did not start listening within {START_TIMEOUT:.0f} s")
            multiprocessing.connection.wait(waiting, remaining)
            self._drain_wake()
            for worker in list(self.workers.values()):
                error = self._poll(worker)
                if error is not None:
                    raise error
                if not worker.ready and not worker.process.is_alive():
                    raise RuntimeError(
                        f"worker {worker.index} (pid {worker.pid}) exited with "
                        f"{_describe_exit(worker.process.exitcode)} before listening")

    def _poll(self, worker: _Worker) -> BaseException | None:
        """Read the worker's reports: 'ready', or the exception it failed to start with."""
        conn = worker.conn
        while conn is not None and conn.poll():
            try:
                kind, value = conn.recv()
            except (EOFError, OSError):
                conn.close()
                worker.conn = conn = None
                break
            except Exception as exc:  # an exception that does not unpickle
                return RuntimeError(f"worker {worker.index} failed to start: {exc!r}")
            if kind == "ready":
                worker.ready = True
            elif kind == "error":
                return value if isinstance(value, BaseException) else RuntimeError(str(value))
        return None

    def _drain_wake(self) -> None:
        try:
            while os.read(self.wake_r, 512):
                pass
        except (BlockingIOError, InterruptedError):
            pass

    def _supervise(self) -> None:
        while not self.stopping:
            waiting: list[Any] = [self.wake_r]
            for worker in self.workers.values():
                waiting.append(worker.process.sentinel)
                if worker.conn is not None:
                    waiting.append(worker.conn)
            timeout = None
            if self.restart_at:
                timeout = max(0.0, min(self.restart_at.values()) - time.monotonic())
            for worker in self.retiring:
                waiting.append(worker.process.sentinel)
            multiprocessing.connection.wait(waiting, timeout)
            self._drain_wake()
            if self.stopping:
                break
            self._reap_retired()
            if self.reload_requested:
                self.reload_requested = False
                self._reload()
                continue
            now = time.monotonic()
            for index, worker in list(self.workers.items()):
                error = self._poll(worker)
                if error is not None:
                    logger.error("worker %d (pid %d) failed: %r", index, worker.pid, error)
                if worker.process.is_alive():
                    if worker.ready and now - worker.started_at > FAST_FAILURE:
                        self.delays[index] = 0.0
                    continue
                worker.process.join()
                retire_file(self.metrics_dir, index, worker.pid)
                if worker.conn is not None:
                    worker.conn.close()
                del self.workers[index]
                lived = now - worker.started_at
                delay = self._back_off(index) if lived < FAST_FAILURE else 0.0
                self.delays[index] = delay
                if delay:
                    self._close_slot(index)
                logger.warning("worker %d (pid %d) exited with %s after %.1f s; restarting it%s",
                               index, worker.pid, _describe_exit(worker.process.exitcode), lived,
                               f" in {delay:.1f} s" if delay else "")
                self.restart_at[index] = now + delay
            for index, when in list(self.restart_at.items()):
                if when <= time.monotonic():
                    del self.restart_at[index]
                    try:
                        worker = self._spawn(index)
                    except OSError as exc:   # out of descriptors, processes, ...
                        # Nobody would accept what the kernel queues on the slot meanwhile.
                        self._close_slot(index)
                        delay = self.delays[index] = self._back_off(index)
                        logger.error("worker %d cannot restart (%s); trying again in %.1f s",
                                     index, exc, delay)
                        self.restart_at[index] = time.monotonic() + delay
                        continue
                    logger.info("worker %d restarted (pid %d)", index, worker.pid)

    def _back_off(self, index: int) -> float:
        """The slot's next restart delay while it keeps failing: 0.5 s, doubling, capped."""
        return min(MAX_RESTART_DELAY, max(0.5, self.delays[index] * 2))

    def _reap_retired(self) -> None:
        for worker in list(self.retiring):
            if not worker.process.is_alive():
                worker.process.join()
                retire_file(self.metrics_dir, worker.index, worker.pid)
                if worker.conn is not None:
                    worker.conn.close()
                    worker.conn = None
                self.retiring.remove(worker)

    def _reload(self) -> None:
        """SIGHUP: for each slot, start a new worker, wait until it listens, then tell the
        old one to retire (it stops accepting and closes its clients with 1012)."""
        logger.info("reloading %d worker(s)", len(self.workers))
        for index in sorted(self.workers):
            old = self.workers.pop(index)
            try:
                new = self._spawn(index)
            except OSError as exc:   # out of descriptors, processes, ...
                self.workers[index] = old
                logger.error("reload stopped: cannot start worker %d (%s); the old one goes on",
                             index, exc)
                return
            deadline = time.monotonic() + START_TIMEOUT
            while not new.ready and new.process.is_alive() and not self.stopping \
                    and time.monotonic() < deadline:
                waiting: list[Any] = [self.wake_r, new.process.sentinel]
                if new.conn is not None:
                    waiting.append(new.conn)
                multiprocessing.connection.wait(waiting, max(0.0, deadline - time.monotonic()))
                self._drain_wake()
                error = self._poll(new)
                if error is not None:
                    logger.error("worker %d failed to start during a reload: %r", index, error)
                    break
            if not new.ready:
                # Keep the old worker serving; the new one is not coming.
                if new.process.is_alive():
                    new.process.kill()
                new.process.join(5)
                if new.conn is not None:
                    new.conn.close()
                self.workers[index] = old
                logger.error("reload stopped: worker %d did not start; the old one goes on", index)
                return
            self.retiring.append(old)
            try:
                os.kill(old.pid, signal.SIGHUP)
            except ProcessLookupError:
                pass
            logger.info("worker %d replaced (pid %d -> %d)", index, old.pid, new.pid)
            if self.stopping:
                return

    def _stop_all(self) -> None:
        """SIGTERM to every worker (each shuts down gracefully), bounded wait, then SIGKILL."""
        live = [w for w in [*self.workers.values(), *self.retiring] if w.process.is_alive()]
        if live:
            logger.info("stopping %d worker(s)", len(live))
        for worker in live:
            try:
                os.kill(worker.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + self.app.close_timeout + 5.0
        for worker in live:
            worker.process.join(max(0.0, deadline - time.monotonic()))
        for worker in live:
            if worker.process.is_alive():
                logger.warning("worker %d (pid %d) did not stop in time: killing it",
                               worker.index, worker.pid)
                worker.process.kill()
                worker.process.join(5)
        for worker in [*self.workers.values(), *self.retiring]:
            if worker.conn is not None:
                worker.conn.close()
                worker.conn = None
        self.workers.clear()
        self.retiring.clear()


def _describe_exit(code: int | None) -> str:
    if code is None:
        return "no exit code"
    if code < 0:
        try:
            return f"signal {signal.Signals(-code).name}"
        except ValueError:
            return f"signal {-code}"
    return f"code {code}"


def _stop_with_parent(parent: int) -> None:
    """Linux: SIGTERM (a graceful stop) to this worker if the supervisor dies, even by SIGKILL."""
    if not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # pragma: no cover - no prctl here
        return
    if os.getppid() != parent:  # it died before prctl took effect
        os.kill(os.getpid(), signal.SIGTERM)


def _worker_main(app: WorkerApp, host: str, port: int, tls: ssl.SSLContext | None,
                 report: multiprocessing.connection.Connection, inherited: tuple[int, ...],
                 parent: int, where: dict[str, Any], metrics: tuple[str, int]) -> None:
    """The body of a worker process (forked: ``app`` is the parent's object, copied)."""
    from .server import run
    from .reload import serve_worker
    from .worker_metrics import WorkerMetrics

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):  # the loop installs its own
        signal.signal(sig, signal.SIG_DFL)
    _stop_with_parent(parent)
    app.worker_metrics = WorkerMetrics(*metrics)
    for fd in inherited:  # the parent's ends: the wake-up pipe, the reservation, other pipes
        try:
            os.close(fd)
        except OSError:
            pass

    def ready() -> None:
        report.send(("ready", os.getpid()))

    try:
        run(serve_worker(app, host, port, tls, ready=ready, **where))
    except BaseException as exc:
        try:
            report.send(("error", exc))
        except Exception:  # it does not pickle: send its text
            report.send(("error", RuntimeError(f"{type(exc).__name__}: {exc}")))
        report.close()
        sys.exit(3)
    report.close()
