"""Where a listener's socket comes from when it is not a fresh TCP port.

* ``unix=PATH``: a Unix domain socket bound here (a stale socket file left by a crashed
  process is replaced; any other file at PATH is an error, never deleted).
* ``sock=SOCKET``: a listening socket made elsewhere (a supervisor, a test, systemd).
* systemd socket activation: ``LISTEN_FDS``/``LISTEN_PID`` name descriptors from 3 on,
  read by ``python -m harpia`` (or ``--fd N`` for a descriptor passed another way).
"""
from __future__ import annotations

import asyncio
import os
import socket
import stat
from collections.abc import Callable, Sequence
from typing import Any, TypeAlias

from ._acceptor import AcceptingServer
from .errors import ConfigurationError

__all__ = ["start_server", "ListeningServer", "ServerGroup", "bind_tcp", "bind_unix", "inherited_socket", "systemd_sockets", "unlink_unix", "SD_LISTEN_FDS_START"]

#: systemd passes activated sockets as descriptors 3, 4, ... (sd_listen_fds(3)).
SD_LISTEN_FDS_START = 3


def bind_unix(path: str, backlog: int) -> socket.socket:
    """A listening ``AF_UNIX`` stream socket at ``path``."""
    if not hasattr(socket, "AF_UNIX"):
        raise ConfigurationError("unix= needs Unix domain sockets: not available on this platform")
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        pass
    else:
        if not stat.S_ISSOCK(mode):
            raise ConfigurationError(f"unix={path!r}: a file that is not a socket is in the way")
        # A socket file outlives its process; nobody listens on it any more if connecting fails.
        probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            probe.connect(path)
        except (ConnectionRefusedError, FileNotFoundError):
            os.unlink(path)
        else:
            raise ConfigurationError(f"unix={path!r}: another process is listening there")
        finally:
            probe.close()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def bind_tcp(host: str | None, port: int, *, reuse_port: bool, backlog: int) -> list[socket.socket]:
    """Listening TCP sockets for ``host`` (one per address it resolves to), as
    ``loop.create_server`` binds them: ``SO_REUSEADDR``, ``IPV6_V6ONLY`` on IPv6 (so an IPv4
    socket on the same port does not collide), ``SO_REUSEPORT`` when asked."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM,
                               flags=socket.AI_PASSIVE)
    sockets: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            sockets.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if reuse_port:
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(address)
            except OSError as exc:
                raise OSError(exc.errno, f"error while attempting to bind on address "
                                         f"{address!r}: {exc.strerror}") from None
            sock.listen(backlog)
            sock.setblocking(False)
    except BaseException:
        for sock in sockets:
            sock.close()
        raise
    return sockets


async def start_server(loop: asyncio.AbstractEventLoop, protocol_factory: Callable[[], Any], *,
                       sockets: Sequence[socket.socket], host: str, port: int, reuse_port: bool,
                       backlog: int, own_io: bool, on_accept_error: Callable[[int], object],
                       ) -> ListeningServer:
    """Accept on ``sockets``, else on TCP ``host:port``, for ``protocol_factory``: with
    harpia's own socket I/O (``own_io``; ``on_accept_error(errno)`` hears of failed
    accepts), else through the loop's ``create_server``, one per socket."""
    if own_io:
        for sock in sockets:
            sock.listen(backlog)
        listening = list(sockets) or bind_tcp(host, port, reuse_port=reuse_port, backlog=backlog)
        return AcceptingServer(loop, listening, protocol_factory, on_accept_error)
    if not sockets:
        return await loop.create_server(protocol_factory, host, port,
                                        reuse_port=reuse_port or None, backlog=backlog)
    servers = []
    for sock in sockets:
        if sock.family == getattr(socket, "AF_UNIX", None):
            servers.append(await loop.create_unix_server(protocol_factory, sock=sock))
        else:
            servers.append(await loop.create_server(protocol_factory, sock=sock))
    return servers[0] if len(servers) == 1 else ServerGroup(servers)


class ServerGroup:
    """Several loop servers (one per listening socket) closed as one: the loop's
    ``create_server`` takes a single ``sock``."""

    def __init__(self, servers: list[asyncio.Server]) -> None:
        self.servers = servers

    @property
    def sockets(self) -> tuple[Any, ...]:
        return tuple(sock for server in self.servers for sock in server.sockets)

    def close(self) -> None:
        for server in self.servers:
            server.close()


#: What accepts for a listener: ``sockets`` and ``close()`` are all it is asked for.
ListeningServer: TypeAlias = "asyncio.Server | AcceptingServer | ServerGroup"


def unlink_unix(path: str, inode: int) -> None:
    """Remove the socket file we bound, unless another process has replaced it since."""
    try:
        if os.stat(path).st_ino == inode:
            os.unlink(path)
    except OSError:
        pass


def inherited_socket(fd: int) -> socket.socket:
    """The listening stream socket open on descriptor ``fd`` (``--fd N``)."""
    try:
        sock = socket.socket(fileno=fd)
    except OSError as exc:
        raise ConfigurationError(f"descriptor {fd} is not a socket: {exc}") from exc
    if sock.type != socket.SOCK_STREAM:
        sock.detach()
        raise ConfigurationError(f"descriptor {fd} is not a stream socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.detach()
        raise ConfigurationError(f"descriptor {fd} is a socket that does not listen")
    sock.setblocking(False)
    return sock


def systemd_sockets(environ: dict[str, str] | None = None) -> list[socket.socket]:
    """The sockets systemd passed to this process (socket activation), else ``[]``.

    The variables are removed once read, as ``sd_listen_fds(1)`` does, so that a child
    process started later does not take them for its own."""
    env = os.environ if environ is None else environ
    if "LISTEN_FDS" not in env:
        return []
    try:
        count = int(env["LISTEN_FDS"])
        pid = int(env.get("LISTEN_PID", "0"))
    except ValueError as exc:
        raise ConfigurationError(f"LISTEN_FDS/LISTEN_PID are not numbers: {exc}") from exc
    if pid != os.getpid():
        return []                      # meant for another process (our parent, say)
    for name in ("LISTEN_FDS", "LISTEN_PID", "LISTEN_FDNAMES"):
        env.pop(name, None)
    return [inherited_socket(fd) for fd in range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + count)]
