"""Reading REDIS_URL: one server, a Sentinel set, a Redis Cluster; and the sharded key
space of a cluster."""

from __future__ import annotations

import pytest

from aimass.protocol.connections import (
    SentinelTarget,
    UnsupportedRedis,
    celery_url,
    cluster_nodes,
    is_cluster,
    sentinel_target,
)
from aimass.protocol.keys import PLAIN, KeySpace, result_key, shard_of, shard_tags
from aimass.worker.settings import SettingsError, WorkerSettings

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
    ],
)
def test_a_url_that_cannot_be_served_says_what_to_write(url: str, why: str) -> None:
    with pytest.raises(UnsupportedRedis, match=why):
        sentinel_target(url)


def test_a_cluster_url_names_its_nodes_and_gives_celery_its_in_process_transport() -> None:
    url = "redis+cluster://u:pw@n1:7000,[::1]:7001/"
    assert is_cluster(url) and not is_cluster("redis://h:6379/0")
    assert cluster_nodes(url) == (("n1", 7000), ("::1", 7001))
    assert sentinel_target(url) is None
    assert celery_url(url) == ("memory://", {})
    with pytest.raises(UnsupportedRedis, match="host:port"):
        cluster_nodes("redis+cluster://n1/")


def test_celerys_own_consumer_is_refused_on_a_cluster_in_one_line() -> None:
    with pytest.raises(SettingsError, match="need one primary") as caught:
        WorkerSettings(redis_url="redis+cluster://n1:7000/", consumer="celery")
    assert "\n" not in str(caught.value)
    assert WorkerSettings(redis_url="redis+cluster://n1:7000/").consumer == "bulk"


def test_on_one_redis_every_name_stays_as_it_was() -> None:
    assert PLAIN.tags == ("",) and not PLAIN.sharded
    assert PLAIN.result_key("abc") == result_key("abc") == "celery-task-meta-abc"
    assert PLAIN.lists("digits") == [
        "aimass.digits",
        "aimass.digits\x06\x163",
        "aimass.digits\x06\x166",
        "aimass.digits\x06\x169",
    ]
    assert PLAIN.bookkeeping() == [
        "unacked",
        "unacked_index",
        "aimass:runs",
        "aimass:delivery-tags",
        "aimass:holds",
    ]
    assert PLAIN.hold("w1.ab12") == "aimass:hold:w1.ab12"
    assert (
        KeySpace(("{aimass.0}",)).hold("w1.ab12", "{aimass.0}") == "aimass:hold:w1.ab12{aimass.0}"
    )
    assert PLAIN.wake_channel("digits") == "aimass:wake:digits"
    assert PLAIN.dead_letter_keys("digits") == ["aimass:dead:digits"]


def test_a_jobs_shard_and_keys_follow_from_its_id_and_the_shard_count() -> None:
    from redis.crc import key_slot

    space = KeySpace(shard_tags(3))
    tag = space.tag("abc")
    assert tag == shard_tags(3)[shard_of("abc", 3)]
    keys = [space.result_key("abc"), space.submitted_key("abc"), space.cancelled_key("abc")]
    assert len({key_slot(key.encode()) for key in keys}) == 1
    assert key_slot(space.lists("digits", tag)[2].encode()) == key_slot(keys[0].encode())
    assert space.job_id_of(space.result_key("a}b")) == "a}b"


@pytest.mark.parametrize("count", [1, 3, 6, 12])
def test_shard_tags_spread_evenly_over_equal_slot_ranges(count: int) -> None:
    from redis.crc import key_slot

    slots = [key_slot(tag.encode()) for tag in shard_tags(count)]
    width = 16384 / count
    assert [int(slot // width) for slot in slots] == list(range(count))


def test_the_password_stays_out_of_messages() -> None:
    with pytest.raises(UnsupportedRedis) as caught:
        sentinel_target("redis+sentinel://u:topsecret@s1/aimass/0")
    assert "topsecret" not in str(caught.value)
