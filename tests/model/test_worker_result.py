"""A load worker's result record and its frame on the pipe."""

import json
import struct

import pytest
from hdrh.histogram import HdrHistogram

from tcpmax.model.worker_result import (
    WorkerResult,
    decode_worker_result,
    encode_worker_result,
)


def _histogram(*values: int) -> bytes:
    h = HdrHistogram(1, 3_600_000_000, 3)
    for v in values:
        h.record_value(v)
    return h.encode()


RESULT = WorkerResult(
    errors={"EADDRNOTAVAIL": 3, "99999": 1},
    peak_open=120,
    final_open=117,
    per_source={"127.0.0.2": 60, "127.0.0.3": 60},
    connect_hist=_histogram(80, 95, 4000),
    msg_hist=_histogram(150),
)


def test_a_result_survives_the_round_trip():
    assert decode_worker_result(encode_worker_result(RESULT)) == RESULT


def test_a_result_without_echo_latencies_survives_the_round_trip():
    quiet = WorkerResult({}, 0, 0, {}, _histogram(), None)
    assert decode_worker_result(encode_worker_result(quiet)) == quiet


def test_the_decoded_histogram_adds_into_the_run_histogram():
    decoded = decode_worker_result(encode_worker_result(RESULT))
    assert decoded is not None
    total = HdrHistogram(1, 3_600_000_000, 3)
    total.decode_and_add(decoded.connect_hist)
    assert total.get_total_count() == 3
    assert total.get_value_at_percentile(50) == 95


def test_no_bytes_means_no_result():
    assert decode_worker_result(b"") is None


@pytest.mark.parametrize("cut", [1, 3, 4, 10, -1])
def test_a_frame_cut_short_is_no_result_rather_than_a_partial_one(cut):
    frame = encode_worker_result(RESULT)
    assert decode_worker_result(frame[:cut]) is None


def _frame(fields: dict[str, object]) -> bytes:
    body = json.dumps(fields).encode()
    return struct.pack("I", len(body)) + body


def _fields() -> dict[str, object]:
    frame = encode_worker_result(RESULT)
    return json.loads(frame[4:])


def test_a_complete_frame_that_is_not_a_result_is_an_error():
    with pytest.raises(ValueError, match="not a load worker's result"):
        decode_worker_result(_frame({"errors": {}}))


def test_a_count_that_is_not_an_integer_is_an_error():
    with pytest.raises(ValueError, match="expected a count"):
        decode_worker_result(_frame({**_fields(), "peak_open": "120"}))


def test_a_histogram_that_is_not_base64_is_an_error():
    with pytest.raises(ValueError, match="not a load worker's result"):
        decode_worker_result(_frame({**_fields(), "connect_hist": "not base64!"}))


def test_a_result_with_tls_and_websocket_upgrade_times_survives_the_round_trip():
    full = WorkerResult({"WS_HTTP_403": 2}, 5, 5, {"127.0.0.2": 5}, _histogram(90),
                        tls_hist=_histogram(700), ws_hist=_histogram(300, 400))
    assert decode_worker_result(encode_worker_result(full)) == full


def test_reply_latencies_and_failure_samples_survive_the_round_trip():
    full = WorkerResult({"UNEXPECTED_REPLY": 3}, 0, 0, {}, _histogram(90),
                        reply_hist=_histogram(250), samples={"UNEXPECTED_REPLY": "HTTP/1.1 404"})
    assert decode_worker_result(encode_worker_result(full)) == full
