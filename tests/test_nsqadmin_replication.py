"""nsqadmin over replicated nsqd processes (README, "Replication"): the nodes list and a
node's API answer and page show each primary's replica with its state and lag, and each
replica's copy of its primary, following, then taken over once the primary is killed."""

import re

import pytest

from admin_cluster import ReplicatedPair
from support import V2Client, wait_until

pytestmark = pytest.mark.slow   # starts daemon processes


def row_text(html, attribute):
    """The text of the table row or list item opened with ``attribute`` (``name="value"``),
    its markup left out."""
    match = re.search(rf'<(tr|li)[^>]* {re.escape(attribute)}[^>]*>(.*?)</\1>', html, re.S)
    assert match, (attribute, html)
    return " ".join(re.sub(r"<[^>]+>", " ", match.group(2)).split())


@pytest.fixture
def pair(nsqd_factory):
    pair = ReplicatedPair(nsqd_factory)
    yield pair
    pair.admin.stop()


def test_replicas_and_copies_in_the_api_and_pages(pair):
    wait_until(lambda: pair.replica_state() == "up", timeout=30,
               message="nsqadmin shows the replica up")
    [replica] = pair.listed()[pair.primary_node]["replicas"]
    assert replica["address"] == pair.replica.tcp_address
    assert {"pending_bytes", "lag_ms", "oldest_unacknowledged_ms", "since"} <= set(replica)
    producer = V2Client(pair.primary.tcp_port)
    assert pair.primary.http("POST", "/topic/create?topic=kept")[0] == 200
    assert pair.primary.http("POST", "/channel/create?topic=kept&channel=work")[0] == 200
    assert producer.mpub("kept", [b"abc"] * 4) == (0, b"OK")
    producer.close()

    doc = pair.api(f"/api/nodes/{pair.primary_node}")
    assert doc["node"] == pair.primary_node and doc["total_messages"] == 4
    assert doc["replication"]["replicas"][0]["state"] == "up"
    assert doc["replication"]["copies"] == []
    copy = wait_until(lambda: (c := pair.copy_of_primary()) and c["messages"] == 4 and c,
                      message="the replica's copy holds the 4 messages")
    assert (copy["primary"], copy["state"]) == (pair.primary_node, "following")
    # The nodes list shows what nsqadmin's poller last saw.
    html = wait_until(lambda: (html := pair.page("/nodes")) and row_text(
        html, f'data-primary="{pair.primary_node}"') == (
            f"copy of {pair.primary_node} following 4 messages") and html,
        message="the nodes list shows the copy")
    assert "<th>Replication</th>" in html
    assert row_text(html, f'data-replica="{pair.replica.tcp_address}"').startswith(
        f"replica {pair.replica.tcp_address} up")
    html = pair.page(f"/nodes/{pair.primary_node}")
    assert row_text(html, f'data-replica="{pair.replica.tcp_address}"').startswith(
        f"{pair.replica.tcp_address} up")

    pair.replica.stop()
    wait_until(lambda: pair.replica_state() == "down", message="nsqadmin shows it down")
    html = pair.page(f"/nodes/{pair.primary_node}")
    assert '<span class="tag warn state">down</span>' in html
    pair.replica.restart()
    wait_until(lambda: pair.replica_state() == "up", timeout=30, message="up again")

    pair.primary.kill()
    copy = wait_until(lambda: (c := pair.copy_of_primary())["state"] == "taken_over" and c,
                      timeout=30, message="the copy taken over")
    assert copy["taken_over_count"] == 4 and copy["taken_over_at"] > 0
    html = pair.page(f"/nodes/{pair.replica_node}")
    cells = row_text(html, f'data-primary="{pair.primary_node}"')
    assert cells.startswith(f"{pair.primary_node} taken over ") and " 4 " in cells
    wait_until(lambda: row_text(pair.page("/nodes"), f'data-primary="{pair.primary_node}"')
               == f"copy of {pair.primary_node} taken over 4 messages taken over",
               message="the nodes list shows the copy taken over")
