"""Cross-process publish: the ``Backplane`` protocol and its Redis implementations.

``harpia(pubsub=URL)`` makes ``app.publish`` / ``ws.publish`` reach the subscribers of every
process and node attached to the same Redis deployment:

* ``redis://host:6379/0`` (also ``rediss://``, ``unix://``): one Redis server,
  ``RedisBackplane`` (``single.py``);
* ``redis+cluster://host:port[,host:port...]``: Redis Cluster with sharded pub/sub,
  ``RedisClusterBackplane`` (``cluster.py``);
* ``redis+sentinel://host:port[,host:port...]/service_name``: a master and its replicas
  under Sentinel, ``RedisSentinelBackplane`` (``sentinel.py``).

In every case:

* the publishing process delivers to its own subscribers directly (no broker round trip),
  then hands the message to the backplane, which never blocks the caller;
* each process subscribes to a topic's channel only while it has a local subscriber to it
  (``TopicRegistry.on_first_subscriber`` / ``on_last_subscriber``), batching the changes of
  one loop turn;
* a message from another process is turned into WebSocket frames once and the same bytes
  are copied to every local subscriber; a process drops the envelopes it published itself
  (``envelope.py``: they carry its id), so nothing is delivered twice.

Broker faults: see each class.  Everything here runs on the event loop of the app's
listeners; ``app.publish`` must be called on that loop (``app.publish_threadsafe`` from
other threads).
"""
from __future__ import annotations

from ..errors import ConfigurationError
from .cluster import RedisClusterBackplane
from .envelope import ENVELOPE_LIMIT, MAGIC, decode_envelope, encode_envelope
from .protocol import Backplane, Deliver
from .sentinel import RedisSentinelBackplane
from .single import RedisBackplane

__all__ = ["Backplane", "Deliver", "RedisBackplane", "RedisClusterBackplane",
           "RedisSentinelBackplane", "make_backplane", "MAGIC", "ENVELOPE_LIMIT",
           "encode_envelope", "decode_envelope"]


def make_backplane(pubsub: object) -> Backplane | None:
    """``harpia(pubsub=...)``: None, a Redis URL (``redis://``, ``rediss://``, ``unix://``,
    ``redis+cluster://``, ``redis+sentinel://``), or a ``Backplane`` object."""
    if pubsub is None:
        return None
    if isinstance(pubsub, str):
        scheme = pubsub.partition("://")[0].lower()
        if scheme in RedisClusterBackplane.SCHEMES:
            return RedisClusterBackplane(pubsub)
        if scheme in RedisSentinelBackplane.SCHEMES:
            return RedisSentinelBackplane(pubsub)
        return RedisBackplane(pubsub)
    if isinstance(pubsub, Backplane):
        return pubsub
    raise ConfigurationError(
        "pubsub must be a Redis URL ('redis://host:6379/0', 'redis+cluster://host:port,...', "
        "'redis+sentinel://host:port,.../service') or a backplane object with "
        f"start, stop, publish, subscribe and unsubscribe; got {type(pubsub).__name__}")
