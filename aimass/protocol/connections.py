"""Connections to Redis: one server, the primary of a Sentinel set, or a Redis Cluster.

``REDIS_URL`` (and the URL a client is given) is one of

- ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path?db=N``:
  one Redis server;
- ``redis+sentinel://[user:password@]host:port,host:port,.../service/db`` (or
  ``rediss+sentinel://`` for TLS to the servers): the primary that these sentinels know
  as ``service``. After a failover, connections ask the sentinels for the new primary
  by themselves; the credentials are the primary's (sentinels without a password).

- ``redis+cluster://[user:password@]host:port,host:port,.../`` (or ``rediss+cluster://``
  for TLS): a Redis Cluster, through redis-py's cluster client; any reachable nodes will
  do, the client learns the rest. The model queues are then sharded over its primaries
  (``aimass.protocol.keys.KeySpace``, ``aimass.protocol.shards``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
CELERY_ON_CLUSTER = (
    "a Redis Cluster (redis+cluster://) carries aimass's bulk consumer and client only: "
    "Celery's own consumer, Flower and producers that send through Celery/kombu need one "
    "primary (redis:// or redis+sentinel://)"
)


class UnsupportedRedis(ValueError):
    """A Redis aimass cannot work with, or a URL it cannot read."""


@dataclass(frozen=True)
class SentinelTarget:
    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int
    username: str | None
    password: str | None
    tls: bool


def sentinel_target(url: str) -> SentinelTarget | None:
    """What a ``redis+sentinel://`` URL names; ``None`` for any other URL."""
    parts = urlsplit(url)
    if parts.scheme not in SENTINEL_SCHEMES:
        return None
    sentinels = _hosts(url, "sentinels")
    path = [part for part in parts.path.split("/") if part]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise UnsupportedRedis(
            f"{_safe(url)}: expected .../service/db after the sentinels, "
            "e.g. redis+sentinel://s1:26379,s2:26379/mymaster/0"
        )
    username, password = _credentials(url)
    return SentinelTarget(
        sentinels,
        path[0],
        int(path[1]) if len(path) == 2 else 0,
        username,
        password,
        parts.scheme.startswith("rediss"),
    )


def is_cluster(url: str) -> bool:
    """Whether ``url`` names a Redis Cluster (``redis+cluster://``)."""
    return urlsplit(url).scheme in CLUSTER_SCHEMES


def cluster_nodes(url: str) -> tuple[tuple[str, int], ...]:
    """The nodes a ``redis+cluster://`` URL names (any reachable one will do)."""
    return _hosts(url, "cluster nodes")


def _hosts(url: str, what: str) -> tuple[tuple[str, int], ...]:
    """The ``host:port,host:port`` list of a Sentinel or cluster URL."""
    hosts = urlsplit(url).netloc.rsplit("@", 1)[-1]
    out = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise UnsupportedRedis(f"{_safe(url)}: expected {what} as host:port,host:port")
        out.append((name.strip("[]"), int(port)))
    return tuple(out)


def _credentials(url: str) -> tuple[str | None, str | None]:
    netloc = urlsplit(url).netloc
    credentials = netloc.rsplit("@", 1)[0] if "@" in netloc else ""
    username, _, password = credentials.partition(":")
    return unquote(username) or None, unquote(password) or None


def connect(url: str, **options: Any) -> Any:
    """A ``redis.Redis`` for ``url``: one server, or a Sentinel set's current primary;
    a ``redis.cluster.RedisCluster`` for a cluster."""
    import redis
    from redis.cluster import ClusterNode, RedisCluster
    from redis.sentinel import Sentinel

    if is_cluster(url):
        return _cluster(url, options, RedisCluster, ClusterNode)
    return _connect(url, options, redis.Redis, Sentinel)


def connect_async(url: str, **options: Any) -> Any:
    """``connect`` for asyncio (``redis.asyncio.Redis``, ``redis.asyncio.RedisCluster``)."""
    import redis.asyncio as aioredis
    from redis.asyncio.cluster import ClusterNode, RedisCluster
    from redis.asyncio.sentinel import Sentinel

    if is_cluster(url):
        return _cluster(url, options, RedisCluster, ClusterNode)
    return _connect(url, options, aioredis.Redis, Sentinel)


def _cluster(url: str, options: dict[str, Any], client_class: Any, node_class: Any) -> Any:
    """A cluster client; the keepalive and health-check options of one server's client
    apply to each node's connections."""
    username, password = _credentials(url)
    options = {k: v for k, v in options.items() if k != "health_check_interval"}
    return client_class(
        startup_nodes=[node_class(host, port) for host, port in cluster_nodes(url)],
        username=username,
        password=password,
        ssl=urlsplit(url).scheme.startswith("rediss"),
        **options,
    )


def _connect(url: str, options: dict[str, Any], client_class: Any, sentinel_class: Any) -> Any:
    target = sentinel_target(url)
    if target is None:
        return client_class.from_url(url, **options)
    sentinel = sentinel_class(list(target.sentinels), **_sentinel_options(options))
    return sentinel.master_for(
        target.service,
        db=target.db,
        username=target.username,
        password=target.password,
        ssl=target.tls,
        **options,
    )


def celery_url(url: str) -> tuple[str, dict[str, Any]]:
    """The broker (and result backend) URL in kombu's and Celery's own form, with the
    transport options it needs: ``sentinel://host:port/db;sentinel://...`` and the
    service as ``master_name`` for a Sentinel set; ``url`` itself otherwise. On a
    cluster, which kombu cannot use, Celery gets its in-process transport: the bulk
    consumer and the client do all the work with Redis there."""
    if is_cluster(url):
        return "memory://", {}
    target = sentinel_target(url)
    if target is None:
        return url, {}
    auth = f"{target.username or ''}:{target.password}@" if target.password else ""
    urls = ";".join(
        f"sentinel://{auth}{host}:{port}/{target.db}" for host, port in target.sentinels
    )
    options: dict[str, Any] = {"master_name": target.service}
    if target.tls:
        options["ssl"] = True
    return urls, options


def _sentinel_options(options: dict[str, Any]) -> dict[str, Any]:
    """The timeouts of the connections to the sentinels themselves."""
    return {
        key: options[key] for key in ("socket_timeout", "socket_connect_timeout") if key in options
    }


def _safe(url: str) -> str:
    """``url`` without its password, for messages."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url
    hosts = parts.netloc.rsplit("@", 1)[1]
    return parts._replace(netloc=f"***@{hosts}").geturl()
