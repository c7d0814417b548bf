"""Where a listener's socket comes from when it is not a fresh TCP port.

* ``unix=PATH``: a Unix domain socket bound here (a stale socket file left by a crashed
  process is replaced; any other file at PATH is an error, never deleted).
* ``sock=SOCKET``: a listening socket made elsewhere (a supervisor, a test, systemd).
* systemd socket activation: ``LISTEN_FDS``/``LISTEN_PID`` name descriptors from 3 on,
  read by ``python -m harpia`` (or ``--fd N`` for a descriptor passed another way).
"""
from __future__ import annotations

import os
import socket
import stat

from .errors import ConfigurationError

__all__ = ["bind_unix", "inherited_socket", "systemd_sockets", "unlink_unix", "SD_LISTEN_FDS_START"]

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
