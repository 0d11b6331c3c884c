"""The real server under concurrent clients: every answer right, bad input refused, no cross-talk.

The harness of `bench/load_test.py` (`make load-test`), shorter: 8 clients for 8 s against
gunicorn with its default settings. Each client carries its own kalman and fuzzy-off-arm
streams' state and every answer is compared with the same computation done in this process, so
a state or window mixed up between concurrent requests fails here. Memory is judged by the
one-minute bench only: a few seconds of RSS is noise.
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import load_test  # noqa: E402

CLIENTS = 8


@pytest.fixture(scope="module")
def result():
    return load_test.run_load(seconds=8, clients=CLIENTS, warmup_s=2)


@pytest.fixture(scope="module")
def workload():
    return load_test.build_workload(len(load_test.KALMAN_FILTERS))


def test_no_unexpected_errors_under_concurrent_clients(result):
    assert result.problems == []


def test_every_kind_of_request_was_sent_by_every_client(result):
    # Each client's first deck of 20 holds every kind; its answers were all checked (no problems).
    for kind in load_test.KINDS:
        assert result.tally.kinds[kind].requests >= CLIENTS, kind


def test_every_kind_of_bad_request_got_a_clear_refusal(result, workload):
    assert set(result.tally.bad_by_name) == {case.name for case in workload.bad[0]}
    assert result.tally.kinds[load_test.BAD].unexpected == 0


def test_concurrent_stateful_streams_carried_on_with_their_own_state(result):
    assert result.tally.kinds[load_test.KALMAN].unexpected == 0
    assert result.tally.kinds[load_test.OFF_ARM].unexpected == 0
    # Every client got past its stream's first request at least once per stream.
    assert result.streams_continued >= 2 * CLIENTS


def test_every_worker_was_sampled(result):
    assert result.workers == load_test.configured_workers()  # gunicorn.conf.py: 2 unless WEB_CONCURRENCY
    assert len(result.memory) == result.workers
    assert all(row.start_mb > 0 and row.max_mb >= row.end_mb for row in result.memory)


# The checks themselves: an answer made with another stream's state or data must not pass.

@pytest.mark.parametrize("kind", ["kalman", "off_arm"])
def test_an_answer_computed_for_another_clients_stream_is_flagged(workload, kind):
    mine, other = getattr(workload, kind)[:2]
    _, chunk = mine.next_body()
    foreign = {"features": other.expected[chunk].reshape(-1).tolist(), "state": other.states[chunk.stop - 1],
               "state_string": other.states[chunk.stop - 1]}
    assert mine.verify(foreign, chunk) is not None


@pytest.mark.parametrize("kind", ["kalman", "off_arm"])
def test_a_window_computed_without_its_streams_state_is_flagged(workload, kind):
    """The streams' features depend on the state, so a lost or swapped state cannot go unnoticed."""
    for stream in getattr(workload, kind):
        chunk = slice(stream.per_request, 2 * stream.per_request)
        fresh, _ = load_test.in_process(stream.block, stream.windows[chunk], stream.axes, stream.fs, stream.params)
        assert load_test.mismatch(fresh.reshape(-1).tolist(), stream.expected[chunk]) is not None, stream.params


def test_a_correct_answer_passes_and_hands_on_its_state(workload):
    stream = workload.off_arm[0]
    _, first = stream.next_body()
    state = stream.states[first.stop - 1]
    answer = {"features": stream.expected[first].reshape(-1).tolist(), "state_string": state}
    assert stream.verify(answer, first) is None
    body, second = stream.next_body()
    assert second.start == first.stop
    assert load_test.orjson.loads(body)["state_string"] == state


def test_a_bad_request_answered_with_features_is_flagged():
    accepted = load_test.orjson.dumps({"success": True, "features": [1.0]})
    assert load_test.check_bad(200, accepted, 200) is not None
    assert load_test.check_bad(500, b'{"success": false, "error": "x"}', 200) is not None
    assert load_test.check_bad(200, b'{"success": false, "error": "Unknown parameter"}', 200) is None
