"""A polling client of the setpoint service, for control systems (and `linetwin poll`).

`SetpointPoller` long-polls `GET /v1/setpoints?wait=S` with `If-None-Match` (the strong ETag of
the last decision it applied); a 304 means "no change". Each new decision goes to the caller's
`apply` callback, and what was applied is acknowledged with `POST /v1/setpoints/ack`. Errors
are retried after a bounded exponential backoff with jitter. When the server has not answered
for `stale_after_s`, the poller keeps its last-known-good setpoints and reports itself stale
(`poller.stale`, and `on_stale(True)`); it never invents setpoints. The first answer from the
server afterwards makes it fresh again (`on_stale(False)`).

Only decisions the service marks `applied` (closed mode, or approved in advisory mode) go to
`apply`: an advisory or manual-mode recommendation awaiting an engineer goes to `on_advice`
instead and is neither applied nor acknowledged (`only_applied=False` passes every decision to
`apply`, for observers).

One implementation, synchronous (an `httpx.Client`): call `poll_once()` yourself, or `run(stop)`
in a thread of its own::

    def apply(decision: PolledDecision) -> Setpoints | None:
        plc.write(decision.setpoints)        # raise if the plant refused them
        return plc.read_back()               # what is acknowledged; None: as given

    poller = SetpointPoller("http://127.0.0.1:8000", key, apply=apply, on_stale=alarm)
    stop = threading.Event()
    threading.Thread(target=poller.run, args=(stop,), daemon=True).start()

The `apply` contract: it is called once per new decision, in the polling thread, with the
decision (`version`, `setpoints` as `{station: {setpoint: value}}`, the full `payload`). It
returns the values actually applied, in the same shape, or None to acknowledge the setpoints as
given; those are acknowledged for that version (with `acknowledge=False`, nothing is). If it
raises, nothing is acknowledged, the decision does not become the last-known-good one, and the
same (or a newer) decision is offered again after a backoff: `run` counts the failure in
`stats.apply_errors`, `poll_once` lets the exception through.
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx

from linetwin.optimizer.decision import Setpoints, validate

log = logging.getLogger("linetwin.client")

NO_DECISION = "no_decision"
"""The `code` of the server's 503 before its first decision (not an error: wait and ask)."""
RETRYABLE_STATUS = frozenset({408, 425, 429, 500, 502, 503, 504})
"""HTTP answers retried after a backoff; other errors (401, 403, 404, 422, ...) are fatal."""


class PollerError(Exception):
    """A fatal error: a wrong key or role, a wrong URL, a request the server refuses."""


class TransientError(PollerError):
    """The server is unreachable or temporarily unable to answer; retried by `run`."""

    def __init__(self, message: str, retry_after_s: float | None = None) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class PolledDecision:
    """A published decision as received: version, strong ETag, setpoints and full payload."""

    version: int
    etag: str
    setpoints: Setpoints
    payload: dict[str, Any]
    received_at: float
    applied: bool = True
    """Whether the service sent it to the plant (closed mode, or approved in advisory mode);
    False for an advisory or manual-mode recommendation awaiting an engineer."""
    """Wall time it was received, s since the epoch."""


@dataclass
class PollStats:
    """Counters of one poller (read them from any thread; they only grow)."""

    requests: int = 0
    """GET /v1/setpoints requests sent."""
    decisions: int = 0
    """New decisions applied."""
    advice: int = 0
    """New decisions the service did not apply (advisory/manual mode), not passed to `apply`."""
    not_modified: int = 0
    """304 answers: the applied version is still current."""
    no_decision: int = 0
    """503 answers before the server published its first decision."""
    errors: int = 0
    """Failed requests (transport errors, retryable statuses, malformed answers)."""
    apply_errors: int = 0
    """Times the `apply` callback raised."""
    acks: int = 0
    """Acknowledgements the server stored."""
    ack_rejected: int = 0
    """Acknowledgements the server refused (422): dropped."""
    stale_events: int = 0
    """Transitions fresh -> stale."""
    recoveries: int = 0
    """Transitions stale -> fresh."""
    last_error: str | None = None
    """The most recent error, in words."""


@dataclass
class Backoff:
    initial_s: float
    max_s: float
    rng: random.Random
    failures: int = field(default=0)

    def next_delay(self) -> float:
        """Equal jitter: a delay in [cap/2, cap], cap = min(max, initial * 2**failures)."""
        cap = min(self.max_s, self.initial_s * 2.0 ** min(self.failures, 60))
        self.failures += 1
        return cap / 2 + self.rng.uniform(0.0, cap / 2)

    def reset(self) -> None:
        self.failures = 0


def _check_positive(name: str, value: float, zero_ok: bool = False) -> float:
    value = float(value)
    if not math.isfinite(value) or value < 0 or (value == 0 and not zero_ok):
        raise ValueError(f"{name} must be a positive number of seconds, got {value!r}")
    return value


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("Retry-After")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _code(response: httpx.Response) -> str | None:
    """The `code` of an error answer (`{"detail": ..., "code": ...}`), or None."""
    try:
        body = response.json()
    except ValueError:
        return None
    code = body.get("code") if isinstance(body, dict) else None
    return code if isinstance(code, str) else None


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    detail = body.get("detail", body) if isinstance(body, dict) else body
    return str(detail)[:300]


class SetpointPoller:
    """Follow the setpoint service at `base_url` with API key `key`; see the module docstring.

    `wait_s` is the long-poll wait sent to the server (at most 60); each GET may take up to
    `wait_s + read_timeout_s` before it counts as failed. Errors back off from
    `backoff_initial_s` doubling up to `backoff_max_s`, with jitter drawn from `rng` (a
    `random.Random`; pass a seeded one for reproducible delays). After `stale_after_s` without
    an answer from the server the poller is stale (a transport error, a timeout, a 5xx or
    429 is no answer; a 304, a 200, or a fatal 4xx is). A Retry-After is honoured up to
    `max(backoff_max_s, 1)`. With `wait_s=0`, and while the server has published nothing yet
    (503), `run` pauses `poll_interval_s` between rounds. `transport` replaces httpx's (tests).
    """

    def __init__(
        self,
        base_url: str,
        key: str,
        *,
        apply: Callable[[PolledDecision], Mapping[str, Mapping[str, float]] | None] | None = None,
        on_stale: Callable[[bool], None] | None = None,
        on_advice: Callable[[PolledDecision], None] | None = None,
        only_applied: bool = True,
        acknowledge: bool = True,
        wait_s: float = 25.0,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 10.0,
        stale_after_s: float = 30.0,
        backoff_initial_s: float = 0.5,
        backoff_max_s: float = 10.0,
        poll_interval_s: float = 1.0,
        rng: random.Random | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not key:
            raise ValueError("an API key is required")
        self.wait_s = _check_positive("wait_s", wait_s, zero_ok=True)
        if self.wait_s > 60:
            raise ValueError(f"wait_s must be at most 60 s (the server's limit), got {wait_s!r}")
        self.stale_after_s = _check_positive("stale_after_s", stale_after_s)
        self.poll_interval_s = _check_positive("poll_interval_s", poll_interval_s)
        self.apply = apply
        self.on_stale = on_stale
        self.on_advice = on_advice
        self.only_applied = only_applied
        self.acknowledge = acknowledge
        self.stats = PollStats()
        self._backoff = Backoff(
            _check_positive("backoff_initial_s", backoff_initial_s),
            _check_positive("backoff_max_s", backoff_max_s),
            rng if rng is not None else random.Random(),
        )
        connect = _check_positive("connect_timeout_s", connect_timeout_s)
        read = _check_positive("read_timeout_s", read_timeout_s)
        self._client = httpx.Client(
            base_url=base_url.rstrip("/"),
            headers={"Authorization": f"Bearer {key}", "Accept": "application/json"},
            timeout=httpx.Timeout(read + self.wait_s, connect=connect),
            transport=transport,
        )
        self._decision: PolledDecision | None = None
        self._seen: PolledDecision | None = None  # the newest decision received (its ETag)
        self._pending_ack: tuple[int, Setpoints] | None = None
        self._stale = False
        self._last_contact = time.monotonic()  # the staleness clock starts at construction
        self._lock = threading.Lock()
        self._idle_s = 0.0  # how long `run` pauses after a round that brought nothing

    # -- state -----------------------------------------------------------------------------
    @property
    def decision(self) -> PolledDecision | None:
        """The last-known-good decision (the last one applied), or None before the first."""
        return self._decision

    @property
    def latest(self) -> PolledDecision | None:
        """The newest decision received, applied by the service or not (advice), or None."""
        return self._seen

    @property
    def setpoints(self) -> Setpoints | None:
        """The last-known-good setpoints, or None before the first decision; never invented."""
        return None if self._decision is None else self._decision.setpoints

    @property
    def version(self) -> int | None:
        """The version of the last-known-good decision, or None."""
        return None if self._decision is None else self._decision.version

    @property
    def stale(self) -> bool:
        """True while the server has not answered for `stale_after_s` or longer."""
        return self._stale

    @property
    def seconds_since_contact(self) -> float:
        """Seconds since the server last answered (or since the poller was made)."""
        return time.monotonic() - self._last_contact

    # -- one round -------------------------------------------------------------------------
    def poll_once(self, wait_s: float | None = None) -> PolledDecision | None:
        """Send a pending acknowledgement, then one (long) poll; return the new decision once
        applied, or None (no change, nothing published yet, or only advice).

        Raises `TransientError` when the server is unreachable or answers a retryable error
        (the stale state is updated first), `PollerError` on a fatal answer (401, 403, ...),
        and whatever `apply` raises.
        """
        wait = self.wait_s if wait_s is None else min(self.wait_s, max(0.0, wait_s))
        self._idle_s = 0.0
        self._flush_ack()
        headers = {}
        if self._seen is not None:
            headers["If-None-Match"] = self._seen.etag
        self.stats.requests += 1
        try:
            response = self._client.get(
                "/v1/setpoints", params={"wait": f"{wait:g}"}, headers=headers
            )
        except httpx.TransportError as exc:
            raise self._failed(f"cannot reach {self._client.base_url}: {exc!r}") from None
        status = response.status_code
        if status == 304:
            self._contact()
            self.stats.not_modified += 1
            if wait == 0:
                self._idle_s = self.poll_interval_s
            return None
        if status == 503 and _code(response) == NO_DECISION:
            self._contact()
            self.stats.no_decision += 1
            self._idle_s = min(self._backoff.max_s, _retry_after(response) or self.poll_interval_s)
            return None
        if status in RETRYABLE_STATUS:
            raise self._failed(
                f"GET /v1/setpoints: HTTP {status}: {_detail(response)}", _retry_after(response)
            )
        if status != 200:
            self._contact()
            raise PollerError(f"GET /v1/setpoints: HTTP {status}: {_detail(response)}")
        try:
            decision = self._decode(response)
        except ValueError as exc:
            raise self._failed(f"GET /v1/setpoints: malformed answer: {exc}") from None
        self._contact()
        if self._seen is not None and decision.etag == self._seen.etag:
            self.stats.not_modified += 1  # a 200 of the version already seen
            return None
        if self.only_applied and not decision.applied:
            self._seen = decision
            self.stats.advice += 1
            if self.on_advice is not None:
                self.on_advice(decision)
            return None
        applied = decision.setpoints
        if self.apply is not None:
            try:
                result = self.apply(decision)
            except Exception:
                self.stats.apply_errors += 1
                raise
            if result is not None:
                applied = {
                    str(s): {str(k): float(v) for k, v in e.items()} for s, e in result.items()
                }
        self._decision = self._seen = decision
        self.stats.decisions += 1
        if self.acknowledge:
            self._pending_ack = (decision.version, applied)
            self._flush_ack()
        return decision

    def _decode(self, response: httpx.Response) -> PolledDecision:
        """Check the answer with the decision codec (`optimizer.decision.validate`: no line
        spec needed); `DecisionCodecError` is a `ValueError`."""
        body = response.json()
        data = validate(body)
        version = data["version"]
        etag = response.headers.get("ETag") or f'"{version}"'
        return PolledDecision(version, etag, data["setpoints"], body, time.time(), data["applied"])

    def _flush_ack(self) -> None:
        """POST the pending acknowledgement; kept for the next round if the server is away."""
        pending = self._pending_ack
        if pending is None:
            return
        version, values = pending
        try:
            response = self._client.post(
                "/v1/setpoints/ack", json={"version": version, "values": values}
            )
        except httpx.TransportError as exc:
            self.stats.last_error = f"acknowledgement of version {version}: {exc!r}"
            log.debug("%s", self.stats.last_error)
            return
        self._contact()
        if response.status_code == 200:
            self.stats.acks += 1
            self._pending_ack = None
        elif response.status_code in RETRYABLE_STATUS:
            self.stats.last_error = (
                f"acknowledgement of version {version}: HTTP {response.status_code}"
            )
        elif response.status_code in (401, 403):
            raise PollerError(
                f"POST /v1/setpoints/ack: HTTP {response.status_code}: {_detail(response)} "
                "(acknowledging needs a key of role controller)"
            )
        else:  # 422: the server will never take it (unknown version, values outside limits)
            self.stats.ack_rejected += 1
            self._pending_ack = None
            self.stats.last_error = (
                f"acknowledgement of version {version} refused: HTTP {response.status_code}: "
                f"{_detail(response)}"
            )
            log.warning("%s", self.stats.last_error)

    # -- staleness -------------------------------------------------------------------------
    def _contact(self) -> None:
        """The server answered: reset the staleness clock; stale -> fresh."""
        self._last_contact = time.monotonic()
        self._backoff.reset()
        if self._stale:
            self._stale = False
            self.stats.recoveries += 1
            log.warning("setpoint server answers again: fresh (version %s)", self.version)
            if self.on_stale is not None:
                self.on_stale(False)

    def _failed(self, message: str, retry_after_s: float | None = None) -> TransientError:
        self.stats.errors += 1
        self.stats.last_error = message
        log.debug("%s", message)
        self.check_stale()
        return TransientError(message, retry_after_s)

    def check_stale(self) -> bool:
        """Go stale if the server has not answered for `stale_after_s`; return `stale`."""
        if not self._stale and self.seconds_since_contact >= self.stale_after_s:
            self._stale = True
            self.stats.stale_events += 1
            log.warning(
                "setpoint server silent for %.1f s: stale, holding version %s (%s)",
                self.seconds_since_contact,
                self.version,
                self.stats.last_error,
            )
            if self.on_stale is not None:
                self.on_stale(True)
        return self._stale

    # -- the loop --------------------------------------------------------------------------
    def run(self, stop: threading.Event | None = None) -> None:
        """Poll until `stop` is set (a long poll in flight finishes first, within `wait_s`
        plus the read timeout). Transient errors and `apply` failures back off and retry,
        going stale when they last; a fatal `PollerError` is raised."""
        stop = stop if stop is not None else threading.Event()
        with self._lock:
            while not stop.is_set():
                try:
                    if self.poll_once() is None and self._idle_s > 0:
                        stop.wait(self._idle_s)
                    continue
                except TransientError as exc:
                    delay = max(self._backoff.next_delay(), exc.retry_after_s or 0.0)
                except PollerError:
                    raise
                except Exception as exc:  # the caller's `apply` failed: retry it later
                    self.stats.last_error = f"apply failed: {exc!r}"
                    log.warning("%s", self.stats.last_error)
                    delay = self._backoff.next_delay()
                self._sleep(stop, min(delay, max(self._backoff.max_s, 1.0)))

    def _sleep(self, stop: threading.Event, delay: float) -> None:
        """Wait `delay` s (or until `stop`), waking at the staleness deadline to go stale."""
        deadline = time.monotonic() + delay
        while not stop.is_set():
            now = time.monotonic()
            if now >= deadline:
                return
            until = deadline
            if not self._stale:
                until = min(until, self._last_contact + self.stale_after_s)
            stop.wait(max(0.0, until - now) + 1e-3)
            self.check_stale()

    def close(self) -> None:
        """Close the HTTP connections (the last-known-good decision stays readable)."""
        with contextlib.suppress(Exception):
            self._client.close()

    def __enter__(self) -> SetpointPoller:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
