"""Connections to Redis: one server, or the primary of a Sentinel set.

``REDIS_URL`` (and the URL a client is given) is one of

- ``redis://[user:password@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path?db=N``:
  one Redis server;
- ``redis+sentinel://[user:password@]host:port,host:port,.../service/db`` (or
  ``rediss+sentinel://`` for TLS to the servers): the primary that these sentinels know
  as ``service``. After a failover, connections ask the sentinels for the new primary
  by themselves; the credentials are the primary's (sentinels without a password).

Redis Cluster is refused: the scripts that take and settle jobs touch a queue and
kombu's bookkeeping keys together, which a cluster spreads over slots.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

SENTINEL_SCHEMES = ("redis+sentinel", "rediss+sentinel")
CLUSTER_SCHEMES = ("redis+cluster", "rediss+cluster")
CLUSTER_REFUSED = (
    "Redis Cluster is not supported: the scripts that take and settle jobs touch a queue "
    "and kombu's bookkeeping keys in one step, which a cluster spreads over slots. Use "
    "one primary (with replicas and Sentinel for failover: redis+sentinel://...)"
)


class UnsupportedRedis(ValueError):
    """A Redis aimass cannot work with (a cluster), or a URL it cannot read."""


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
    if parts.scheme in CLUSTER_SCHEMES:
        raise UnsupportedRedis(CLUSTER_REFUSED)
    if parts.scheme not in SENTINEL_SCHEMES:
        return None
    hosts = parts.netloc.rsplit("@", 1)[-1]
    sentinels = []
    for host in hosts.split(","):
        name, _, port = host.rpartition(":")
        if not name or not port.isdigit():
            raise UnsupportedRedis(f"{_safe(url)}: expected sentinels as host:port,host:port")
        sentinels.append((name.strip("[]"), int(port)))
    path = [part for part in parts.path.split("/") if part]
    if not path or len(path) > 2 or (len(path) == 2 and not path[1].isdigit()):
        raise UnsupportedRedis(
            f"{_safe(url)}: expected .../service/db after the sentinels, "
            "e.g. redis+sentinel://s1:26379,s2:26379/mymaster/0"
        )
    credentials = parts.netloc.rsplit("@", 1)[0] if "@" in parts.netloc else ""
    username, _, password = credentials.partition(":")
    return SentinelTarget(
        tuple(sentinels),
        path[0],
        int(path[1]) if len(path) == 2 else 0,
        unquote(username) or None,
        unquote(password) or None,
        parts.scheme.startswith("rediss"),
    )


def connect(url: str, **options: Any) -> Any:
    """A ``redis.Redis`` for ``url``: one server, or a Sentinel set's current primary."""
    import redis
    from redis.sentinel import Sentinel

    return _connect(url, options, redis.Redis, Sentinel)


def connect_async(url: str, **options: Any) -> Any:
    """``connect`` for asyncio (``redis.asyncio.Redis``)."""
    import redis.asyncio as aioredis
    from redis.asyncio.sentinel import Sentinel

    return _connect(url, options, aioredis.Redis, Sentinel)


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
    service as ``master_name`` for a Sentinel set; ``url`` itself otherwise."""
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


def refuse_cluster(client: Any) -> None:
    """Raise ``UnsupportedRedis`` when ``client`` talks to a Redis Cluster node."""
    info = client.info("cluster")
    if int(info.get("cluster_enabled", 0)):
        raise UnsupportedRedis(CLUSTER_REFUSED)


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
