"""Reading REDIS_URL: one server, a Sentinel set, and the Redis Cluster that is refused."""

from __future__ import annotations

import pytest

from aimass.protocol.connections import (
    SentinelTarget,
    UnsupportedRedis,
    celery_url,
    refuse_cluster,
    sentinel_target,
)

pytestmark = pytest.mark.unit


def test_a_plain_url_is_one_server() -> None:
    assert sentinel_target("redis://h:6379/0") is None
    assert celery_url("rediss://u:p@h:6380/2") == ("rediss://u:p@h:6380/2", {})


def test_a_sentinel_url_names_the_sentinels_the_service_and_the_database() -> None:
    target = sentinel_target("redis+sentinel://me:s%40cret@s1:26379,[::1]:26380/aimass/3")
    assert target == SentinelTarget(
        (("s1", 26379), ("::1", 26380)), "aimass", 3, "me", "s@cret", False
    )
    assert sentinel_target("rediss+sentinel://s1:26379/svc") == SentinelTarget(
        (("s1", 26379),), "svc", 0, None, None, True
    )


def test_celery_gets_the_sentinels_in_kombus_form_and_the_service_as_master_name() -> None:
    url, options = celery_url("redis+sentinel://:pw@s1:26379,s2:26380/aimass/1")
    assert url == "sentinel://:pw@s1:26379/1;sentinel://:pw@s2:26380/1"
    assert options == {"master_name": "aimass"}


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("redis+sentinel://s1/aimass/0", "host:port"),
        ("redis+sentinel://s1:26379", "service/db"),
        ("redis+sentinel://s1:26379/aimass/x", "service/db"),
        ("redis+cluster://h:7000", "Redis Cluster is not supported"),
    ],
)
def test_a_url_that_cannot_be_served_says_what_to_write(url: str, why: str) -> None:
    with pytest.raises(UnsupportedRedis, match=why):
        sentinel_target(url)


def test_a_cluster_node_is_refused() -> None:
    class Node:
        def info(self, section: str) -> dict:
            return {"cluster_enabled": 1}

    class Server:
        def info(self, section: str) -> dict:
            return {"cluster_enabled": 0}

    refuse_cluster(Server())
    with pytest.raises(UnsupportedRedis, match="Sentinel"):
        refuse_cluster(Node())


def test_the_password_stays_out_of_messages() -> None:
    with pytest.raises(UnsupportedRedis) as caught:
        sentinel_target("redis+sentinel://u:topsecret@s1/aimass/0")
    assert "topsecret" not in str(caught.value)
