"""The hub link's receive over a real ROUTER/DEALER pair on 127.0.0.1."""

import pytest
import zmq

from fleet.sockets import recv_frames, recv_waiting


@pytest.fixture
def pair():
    ctx = zmq.Context()
    router, dealer = ctx.socket(zmq.ROUTER), ctx.socket(zmq.DEALER)
    for s in (router, dealer):
        s.setsockopt(zmq.LINGER, 0)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer.connect(f"tcp://127.0.0.1:{port}")
    yield router, dealer
    router.close(0)
    dealer.close(0)
    ctx.term()


@pytest.mark.timeout(30)
def test_recv_waiting_takes_each_message_whole_and_none_when_nothing_waits(pair):
    router, dealer = pair
    assert recv_waiting(router) is None  # never blocks
    big = bytes(range(256)) * 300
    dealer.send_multipart([b"head-1", big])
    dealer.send_multipart([b"head-2"])
    first = recv_frames(router, 5000)
    assert first is not None and [f.bytes for f in first[1:]] == [b"head-1", big] and len(first) == 3
    assert router.poll(5000)
    second = recv_waiting(router)
    assert second is not None and [f.bytes for f in second[1:]] == [b"head-2"]
    assert second[0].bytes == first[0].bytes  # the same peer
    assert recv_waiting(router) is None
