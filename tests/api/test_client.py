"""The polling client: against a live service on loopback, and against scripted answers."""

from __future__ import annotations

import json
import random
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pollserver import LiveServer, free_port
from waiting import wait_until

from linetwin.api.client import Backoff, PolledDecision, PollerError, SetpointPoller, TransientError
from linetwin.api.keys import Role
from linetwin.twin.spec import LineSpec


@pytest.fixture
def server(two: LineSpec, model_dir: Path, tmp_path: Path) -> Iterator[LiveServer]:
    """A live service deciding once a wall second (60x, a decision every 60 line s)."""
    live = LiveServer(two, model_dir, tmp_path / "data", free_port(), speed=60.0)
    live.start()
    try:
        yield live
    finally:
        live.stop()


def key_of(live: LiveServer, role: Role) -> str:
    assert live.runtime is not None
    return live.runtime.keys.create(role, f"test {role}", actor="test").key


class Running:
    """`poller.run(stop)` in a thread; `stop()` joins it and re-raises what it raised."""

    def __init__(self, poller: SetpointPoller) -> None:
        self.poller = poller
        self.stop_event = threading.Event()
        self.error: BaseException | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.poller.run(self.stop_event)
        except BaseException as exc:
            self.error = exc

    def stop(self) -> None:
        self.stop_event.set()
        self.thread.join(10)
        assert not self.thread.is_alive()
        self.poller.close()
        if self.error is not None:
            raise self.error


def nominal(two: LineSpec) -> dict[str, dict[str, float]]:
    return {s.name: {"speed": s.setpoints.speed.nominal} for s in two.stations}


# -- against a live service ----------------------------------------------------------------
def test_follows_new_versions_with_304s_between_and_acknowledges(
    server: LiveServer, two: LineSpec
) -> None:
    key = key_of(server, Role.CONTROLLER)
    applied: list[PolledDecision] = []

    def apply(decision: PolledDecision) -> dict[str, dict[str, float]]:
        applied.append(decision)
        return nominal(two)  # "what the plant actually took": acknowledged instead

    poller = SetpointPoller(server.url, key, apply=apply, wait_s=0.3, rng=random.Random(0))
    running = Running(poller)
    try:
        wait_until(lambda: poller.stats.decisions >= 3 and poller.stats.not_modified >= 2)
    finally:
        running.stop()
    versions = [d.version for d in applied]
    assert versions == sorted(set(versions)), versions
    assert poller.version == versions[-1] and poller.setpoints == applied[-1].setpoints
    assert applied[-1].etag == f'"{versions[-1]}"'
    assert not poller.stale and poller.stats.errors == 0
    assert poller.stats.acks == poller.stats.decisions
    assert server.runtime is not None
    acks = {a.client: a for a in server.runtime.storage.acks()}
    ack = acks[key[:11]]
    assert ack.version == versions[-1]
    assert ack.values == nominal(two)


def test_survives_restart_goes_stale_and_recovers(server: LiveServer, two: LineSpec) -> None:
    key = key_of(server, Role.CONTROLLER)
    events: list[tuple[bool, int | None]] = []
    poller = SetpointPoller(
        server.url,
        key,
        apply=lambda d: None,  # acknowledged as given
        on_stale=lambda stale: events.append((stale, poller.version)),
        wait_s=0.3,
        stale_after_s=1.0,
        backoff_initial_s=0.05,
        backoff_max_s=0.2,
        rng=random.Random(1),
    )
    running = Running(poller)
    try:
        wait_until(lambda: poller.stats.decisions >= 1)
        server.stop()
        down_at = time.monotonic()
        held, held_setpoints = poller.version, poller.setpoints
        wait_until(lambda: poller.stale, timeout=5)
        assert time.monotonic() - down_at >= 0.6  # not before the staleness timeout
        assert events == [(True, held)]
        assert poller.version == held and poller.setpoints == held_setpoints  # last-known-good
        assert poller.stats.errors >= 2 and poller.stats.stale_events == 1
        time.sleep(0.5)  # still down: still stale, nothing invented, no second event
        assert poller.stale and poller.version == held and len(events) == 1

        server.start()  # same port, same data directory
        wait_until(lambda: not poller.stale)
        wait_until(lambda: len(events) == 2)  # the callback runs just after the flag changes
        assert events == [(True, held), (False, held)]
        assert held is not None
        # in step with what the restarted service publishes (a cycle that would publish the
        # same setpoints again publishes nothing, so the version may stay where it was)
        runtime = server.runtime
        assert runtime is not None
        wait_until(
            lambda: runtime.current is not None and poller.version == runtime.current.version
        )
        wait_until(lambda: poller.stats.acks == poller.stats.decisions)
    finally:
        running.stop()
    assert poller.stats.recoveries == 1
    assert server.runtime is not None
    acks = {a.client: a for a in server.runtime.storage.acks()}
    assert acks[key[:11]].version == poller.version
    assert acks[key[:11]].values == poller.setpoints


def test_never_reached_goes_stale_without_setpoints() -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens
    events: list[bool] = []
    poller = SetpointPoller(
        url,
        "lt_nobody",
        on_stale=events.append,
        wait_s=0.1,
        stale_after_s=0.3,
        backoff_initial_s=0.02,
        backoff_max_s=0.05,
    )
    running = Running(poller)
    try:
        wait_until(lambda: poller.stale, timeout=5)
    finally:
        running.stop()
    assert events == [True]
    assert poller.setpoints is None and poller.version is None
    assert "cannot reach" in (poller.stats.last_error or "")


def test_cli_once_json(server: LiveServer, cli: Any) -> None:
    key = key_of(server, Role.VIEWER)
    assert server.runtime is not None
    wait_until(lambda: server.runtime is not None and server.runtime.current is not None)
    r = cli("poll", server.url, "--key", key, "--once", "--json", "--wait", "1")
    assert r.code == 0, r.err
    lines = r.out.splitlines()
    assert len(lines) == 1, r.out
    line = json.loads(lines[0])
    assert line["event"] == "decision" and line["stale"] is False and line["applied"] is True
    assert line["version"] >= 1
    assert set(line["setpoints"]) == {"a", "b"}


def test_cli_errors_are_one_line(server: LiveServer, cli: Any) -> None:
    r = cli("poll", server.url, "--key", "lt_" + "x" * 43, "--once")
    assert r.code == 2 and r.out == ""
    assert len(r.err.strip().splitlines()) == 1 and "401" in r.err
    dead = f"http://127.0.0.1:{free_port()}"
    r = cli("poll", dead, "--key", "k", "--once", "--json", "--stale-after", "0.3")
    assert r.code == 2 and r.out == ""
    assert len(r.err.strip().splitlines()) == 1 and "no decision" in r.err


# -- against scripted answers --------------------------------------------------------------
DECISION: dict[str, Any] = {
    "id": "d7",
    "version": 7,
    "line_time_s": 600.0,
    "created_at": 1_700_000_000.0,
    "mode": "closed",
    "setpoints": {"a": {"speed": 1.0}},
    "target": None,
    "predicted": {},
    "status": "optimal",
    "gap": None,
    "solve_seconds": 0.01,
    "reasons": ["ok"],
    "fallback": False,
    "applied": True,
    "timings": {},
}
"""A whole decision as the service sends it (the poller checks it with the decision codec)."""


def scripted(handler: Callable[[httpx.Request], httpx.Response], **kw: Any) -> SetpointPoller:
    return SetpointPoller(
        "http://linetwin.test", "k", transport=httpx.MockTransport(handler), wait_s=0, **kw
    )


def test_wrong_role_for_acks_is_fatal() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(403, json={"detail": "role viewer may not acknowledge"})
        return httpx.Response(200, json=DECISION, headers={"ETag": '"7"'})

    poller = scripted(handler)
    with pytest.raises(PollerError, match="403"):
        poller.poll_once()
    with pytest.raises(PollerError, match="401"):
        scripted(lambda r: httpx.Response(401, json={"detail": "no key"})).poll_once()


def test_apply_failure_acknowledges_nothing_and_is_retried() -> None:
    posts: list[Any] = []
    gets: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posts.append(json.loads(request.content))
            return httpx.Response(200, json={})
        gets.append(request.headers.get("If-None-Match"))
        if request.headers.get("If-None-Match") == '"7"':
            return httpx.Response(304, headers={"ETag": '"7"'})
        return httpx.Response(200, json=DECISION, headers={"ETag": '"7"'})

    calls = {"n": 0}

    def apply(decision: PolledDecision) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            raise RuntimeError("PLC refused")

    poller = scripted(handler, apply=apply)
    with pytest.raises(RuntimeError, match="PLC"):
        poller.poll_once()
    assert poller.setpoints is None and posts == [] and poller.stats.apply_errors == 1
    decision = poller.poll_once()
    assert decision is not None and decision.version == 7
    assert posts == [{"version": 7, "values": {"a": {"speed": 1.0}}}]
    assert poller.poll_once() is None
    assert gets == [None, None, '"7"'] and poller.stats.not_modified == 1


def test_lost_ack_is_resent_and_refused_ack_is_dropped() -> None:
    posts: list[Any] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posts.append(json.loads(request.content))
            if len(posts) == 1:
                raise httpx.ConnectError("server away")
            return httpx.Response(200, json={})
        if request.headers.get("If-None-Match") == '"7"':
            return httpx.Response(304, headers={"ETag": '"7"'})
        return httpx.Response(200, json=DECISION, headers={"ETag": '"7"'})

    poller = scripted(handler)
    assert poller.poll_once() is not None and poller.stats.acks == 0
    assert poller.poll_once() is None  # the pending acknowledgement goes first
    assert poller.stats.acks == 1 and posts == [posts[0]] * 2

    def refusing(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            return httpx.Response(422, json={"detail": [{"msg": "no published decision"}]})
        return httpx.Response(200, json=DECISION, headers={"ETag": '"7"'})

    refused = scripted(refusing)
    assert refused.poll_once() is not None
    assert refused.stats.ack_rejected == 1 and refused.stats.acks == 0
    assert "refused" in (refused.stats.last_error or "")
    assert refused.poll_once() is None  # dropped: not sent again


def test_no_decision_yet_and_malformed_answers() -> None:
    poller = scripted(
        lambda r: httpx.Response(
            503,
            json={"detail": "no decision published yet", "code": "no_decision"},
            headers={"Retry-After": "1"},
        ),
        stale_after_s=0.01,
    )
    time.sleep(0.02)
    assert poller.poll_once() is None and poller.stats.no_decision == 1
    assert not poller.check_stale()  # the server answered
    for body in (
        {**DECISION, "version": 8, "setpoints": {"a": 1}},
        {k: v for k, v in DECISION.items() if k != "applied"},  # never applied by default
        {"version": 8, "setpoints": {"a": {"speed": 1.0}}},
    ):
        bad = scripted(lambda r, body=body: httpx.Response(200, json=body))
        with pytest.raises(TransientError, match="malformed answer: decision"):
            bad.poll_once()
        assert bad.setpoints is None and bad.stats.errors == 1
    busy = scripted(lambda r: httpx.Response(429, headers={"Retry-After": "3"}))
    with pytest.raises(TransientError) as info:
        busy.poll_once()
    assert info.value.retry_after_s == 3.0


def test_backoff_is_bounded_exponential_with_injected_jitter() -> None:
    b = Backoff(0.5, 4.0, random.Random(3))
    delays = [b.next_delay() for _ in range(8)]
    caps = [0.5, 1.0, 2.0, 4.0, 4.0, 4.0, 4.0, 4.0]
    assert all(c / 2 <= d <= c for d, c in zip(delays, caps, strict=True)), delays
    again = Backoff(0.5, 4.0, random.Random(3))
    assert [again.next_delay() for _ in range(8)] == delays  # the jitter comes from the rng
    b.reset()
    assert b.next_delay() <= 0.5


def test_advice_is_not_applied_nor_acknowledged() -> None:
    posts: list[Any] = []
    gets: list[str | None] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.method == "POST":
            posts.append(json.loads(request.content))
            return httpx.Response(200, json={})
        gets.append(request.headers.get("If-None-Match"))
        if len(gets) == 1:  # advisory mode: a recommendation awaiting approval
            return httpx.Response(200, json={**DECISION, "applied": False}, headers={"ETag": '"7"'})
        body = {**DECISION, "version": 8, "applied": True, "setpoints": {"a": {"speed": 0.9}}}
        return httpx.Response(200, json=body, headers={"ETag": '"8"'})

    applied: list[int] = []
    advice: list[int] = []
    poller = scripted(
        handler,
        apply=lambda d: applied.append(d.version),
        on_advice=lambda d: advice.append(d.version),
    )
    assert poller.poll_once() is None
    assert advice == [7] and applied == [] and posts == []
    assert poller.setpoints is None and poller.latest is not None and poller.latest.version == 7
    decision = poller.poll_once()
    assert decision is not None and decision.version == 8 and applied == [8]
    assert posts == [{"version": 8, "values": {"a": {"speed": 0.9}}}]
    assert gets == [None, '"7"'] and poller.stats.advice == 1
