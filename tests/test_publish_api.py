"""The publishing paths an HTTP worker relies on, in the test process (the fast tier):
the common ``/pub`` answered without Falcon gives Falcon's answers byte for byte, and the
core's internal V2 connections (its HTTP workers') keep every guarantee of a TCP client
without being one.
"""

import io
import sys

import falcon
import gevent
import pytest

from greensq.http.nsq_http import NsqHTTPError, create_api
from greensq.http.publish_api import error_answer
from inprocess import InProcessNsqd
from support import FRAME_ERROR, FRAME_RESPONSE

OK = (FRAME_RESPONSE, b"OK")


def wsgi(app, method, path, body=b""):
    """``(status, header list, body)`` exactly as the app gives them to the server."""
    path, _, query = path.partition("?")
    environ = {"REQUEST_METHOD": method, "PATH_INFO": path, "QUERY_STRING": query,
               "CONTENT_LENGTH": str(len(body)), "wsgi.input": io.BytesIO(body),
               "wsgi.errors": sys.stderr, "wsgi.url_scheme": "http", "SERVER_NAME": "x",
               "SERVER_PORT": "4151", "SERVER_PROTOCOL": "HTTP/1.1"}
    answer = {}

    def start_response(status, headers, exc_info=None):
        answer.update(status=status, headers=headers)

    data = b"".join(app(environ, start_response))
    return answer["status"], answer["headers"], data


@pytest.fixture
def app(inproc_nsqd_factory):
    nsqd = inproc_nsqd_factory("--mem-queue-size=0", "--max-bytes-per-topic=100")
    return nsqd.http_client.app


def test_the_common_pub_answers_as_the_falcon_resource(app):
    # "&x=" keeps a request off the common path: Falcon's Pub answers it.
    assert wsgi(app, "POST", "/pub?topic=t", b"m") == wsgi(app, "POST", "/pub?topic=t&x=", b"m")
    assert wsgi(app, "POST", "/pub?topic=t", b"m")[0] == "200 OK"


def test_the_common_pub_refused_answers_as_the_falcon_resource(app):
    while wsgi(app, "POST", "/pub?topic=full", b"x" * 40)[0] == "200 OK":
        pass
    refused = wsgi(app, "POST", "/pub?topic=full", b"x" * 40)
    assert refused == wsgi(app, "POST", "/pub?topic=full&x=", b"x" * 40)
    assert refused[::2] == ("503 Service Unavailable", b'{"message":"QUEUE_FULL"}')


def test_the_early_answer_is_the_wsgi_answer(app):
    # What greensq's HTTP server sends for a common /pub without making an environ.
    def early(query, body):
        status, headers, data = app.early_answer(b"/pub", query, body)
        return status, list(headers), data

    assert early(b"topic=t", b"m") == wsgi(app, "POST", "/pub?topic=t&x=", b"m")
    while early(b"topic=full", b"x" * 40)[0] == "200 OK":
        pass
    assert early(b"topic=full", b"x" * 40) == wsgi(app, "POST", "/pub?topic=full&x=", b"x" * 40)


@pytest.mark.parametrize("path, query, body", [
    (b"/pub/", b"topic=t", b"m"), (b"/p%75b", b"topic=t", b"m"), (b"/mpub", b"topic=t", b"m"),
    (b"/pub", b"topic=t&defer=10", b"m"), (b"/pub", b"topic=bad!", b"m"),
    (b"/pub", b"topic=t", b""), (b"/pub", b"topic=t", b"m" * (1024 * 1024 + 1))])
def test_the_early_answer_leaves_the_rest_to_the_wsgi_app(app, path, query, body):
    assert app.early_answer(path, query, body) is None


@pytest.mark.parametrize("query, body", [
    ("topic=t", b""), ("topic=bad!", b"m"), ("topic=", b"m"), ("topic=t&defer=x", b"m"),
    ("topic=t", b"m" * (1024 * 1024 + 1)), ("", b"m")])
def test_what_the_common_path_does_not_take_falcon_answers(app, query, body):
    status, headers, data = wsgi(app, "POST", f"/pub?{query}", body)
    assert status.startswith(("400", "413")) and b"message" in data, (status, data)


@pytest.mark.parametrize("status, message", [
    (400, "MSG_EMPTY"), (413, "MSG_TOO_BIG"), (500, "INTERNAL_ERROR"), (503, "EXITING"),
    (503, "QUEUE_FULL")])
def test_error_answers_are_falcons(status, message):
    class Refusing:
        def on_post(self, req, resp):
            raise NsqHTTPError(status, message)

    falcon_app = create_api()
    falcon_app.add_route("/pub", Refusing())
    answer_status, headers, body = error_answer(NsqHTTPError(status, message))
    assert (answer_status, list(headers), body) == wsgi(falcon_app, "POST", "/pub", b"m")
    assert answer_status == falcon.code_to_http_status(status)


def test_an_internal_connection_is_no_client_and_survives_a_failed_publish():
    nsqd = InProcessNsqd("--mem-queue-size=0", "--max-bytes-per-topic=100")
    try:
        internal = nsqd.connect(internal=True)
        answers = [internal.pub("full", b"x" * 40) for _ in range(3)]
        assert answers[0] == OK
        assert answers[-1][0] == FRAME_ERROR
        assert answers[-1][1].startswith(b"E_PUB_FAILED PUB failed full: no room on disk")
        assert internal.pub("other", b"y") == OK      # still open
        assert not nsqd.stats()["producers"]
        assert nsqd.topic_stats("other")["message_count"] == 1
    finally:
        nsqd.close()


def test_concurrent_pubs_to_a_nearly_full_topic_are_answered_each_alone(app):
    """Concurrent /pub requests are stored together, but a full bounded queue refuses each
    on its own, as NSQ does: as many are stored as fit one by one."""
    fits = 0
    while wsgi(app, "POST", "/pub?topic=alone", b"x" * 40)[0] == "200 OK":
        fits += 1       # how many fit in a topic, one by one
    greenlets = [gevent.spawn(wsgi, app, "POST", "/pub?topic=crowded", b"x" * 40)
                 for _ in range(8)]
    gevent.joinall(greenlets, raise_error=True)
    statuses = sorted(greenlet.value[0] for greenlet in greenlets)
    assert statuses == ["200 OK"] * fits + ["503 Service Unavailable"] * (8 - fits)
