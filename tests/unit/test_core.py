"""The I/O-free heartbeat core, driven with a fake clock (no threads, no sockets)."""

from __future__ import annotations

import itertools
import logging
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import pytest
from tenacity import RetryCallState, Retrying

from presence_sdk import PresenceConfig, PresenceState
from presence_sdk._core import (
    Call,
    Driver,
    Effect,
    Notifier,
    Refresh,
    Sleep,
    StopAtDeadline,
    WaitFullJitter,
    WaitRetryAfter,
    clamp_server_timing,
    holding_callbacks,
    parse_heartbeat_time,
    query_effects,
    validate_status,
)
from presence_sdk._exceptions import (
    AuthenticationError,
    InvalidInputError,
    NotInstalledError,
    PresenceError,
    RateLimitedError,
    RejectedError,
    TransientError,
)
from presence_sdk._heartbeat import Heartbeat
from presence_sdk._queries import Query, lookup

T0 = "2025-01-02T03:04:05+00:00"
SETTINGS = {"heartbeat_interval_seconds": 10, "timeout_seconds": 30}

Responder = Callable[[Call, float], Any]


@dataclass
class Sim:
    """Drives a Heartbeat with a fake clock; Calls go to ``respond(call, now)``."""

    config: PresenceConfig
    respond: Responder = lambda call, now: T0 if call.fn != "presence_settings" else SETTINGS
    refresh: Callable[[Refresh], None] = lambda effect: None
    now: float = 0.0
    calls: list[tuple[float, str, dict[str, Any]]] = field(default_factory=list)
    sleeps: list[tuple[float, float]] = field(default_factory=list)
    refreshes: list[float] = field(default_factory=list)
    errors: list[PresenceError] = field(default_factory=list)
    states: list[tuple[PresenceState, PresenceState]] = field(default_factory=list)
    events: dict[float, Callable[[Heartbeat], object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.engine = Heartbeat(
            self.config,
            clock=lambda: self.now,
            rng=random.Random(7),
            on_error=self.errors.append,
            on_state_change=lambda old, new: self.states.append((old, new)),
        )

    def perform(self, effect: Effect, stop_at: float, control: Any) -> Any:
        if isinstance(effect, Call):
            self.calls.append((self.now, effect.fn, dict(effect.params)))
            effect.authorization = f"token@{self.now}"
            return self.respond(effect, self.now)
        if isinstance(effect, Refresh):
            self.refreshes.append(self.now)
            return self.refresh(effect)
        assert isinstance(effect, Sleep)
        self.sleeps.append((self.now, effect.seconds))
        wake = self.now + effect.seconds
        due = sorted(t for t in self.events if self.now <= t < wake)
        if due:  # something happens during the sleep and wakes the loop
            self.now = due[0]
            self.events.pop(due[0])(self.engine)
        elif wake >= stop_at and not control.stop_requested:
            self.now = stop_at
            self.engine.request_stop(control)
        else:
            self.now = wake
        return None

    def run(self, seconds: float) -> None:
        """Run the loop until ``seconds`` of fake time, then stop (leave included)."""
        control = self.engine.begin_run()
        driver = Driver(self.engine.run(control))
        for effect in driver:
            try:
                driver.reply(self.perform(effect, seconds, control))
            except PresenceError as exc:
                driver.fail(exc)
        self.engine.end_run(control)

    def beat_times(self, fn: str = "presence_session_beat") -> list[float]:
        return [t for t, name, _ in self.calls if name == fn]


def config(**overrides: Any) -> PresenceConfig:
    values: dict[str, Any] = {"interval": 10.0, "timeout": 30.0, "jitter": 0.0}
    return PresenceConfig(**(values | overrides))


def failing(
    error: Callable[[], PresenceError],
    times: int,
    fn: str | tuple[str, ...] = "presence_session_beat",
) -> Responder:
    """Fail the first ``times`` calls of ``fn`` (one name or several), then succeed."""
    count = {"n": 0}
    names = (fn,) if isinstance(fn, str) else fn

    def respond(call: Call, now: float) -> Any:
        if call.fn in names and count["n"] < times:
            count["n"] += 1
            raise error()
        return SETTINGS if call.fn == "presence_settings" else T0

    return respond


# -- schedule -------------------------------------------------------------------------


def test_first_beat_is_immediate_and_reports_the_initial_status() -> None:
    sim = Sim(config(initial_status="busy"))
    sim.run(25)
    session = str(sim.engine.session_id)
    assert sim.calls[0] == (
        0.0,
        "presence_session_beat",
        {"session_id": session, "new_status": "busy", "device": None, "metadata": None},
    )
    assert sim.beat_times() == [0.0, 10.0, 20.0]
    assert sim.calls[-1][1] == "presence_session_leave"
    assert sim.engine.stats().last_success == datetime.fromisoformat(T0)


def test_interval_and_timeout_come_from_the_server_unless_overridden() -> None:
    sim = Sim(PresenceConfig(jitter=0.0))
    sim.run(25)
    names = [name for _, name, _ in sim.calls]
    assert names[:2] == ["presence_session_beat", "presence_settings"]
    assert names.count("presence_settings") == 1
    assert sim.beat_times() == [0.0, 10.0, 20.0]
    stats = sim.engine.stats()
    assert (stats.interval, stats.timeout) == (10.0, 30.0)

    overridden = Sim(config(interval=4.0, timeout=9.0))
    overridden.run(9)
    assert "presence_settings" not in [name for _, name, _ in overridden.calls]
    assert overridden.beat_times() == [0.0, 4.0, 8.0]


def test_settings_failure_keeps_defaults_and_is_retried_next_cycle() -> None:
    sim = Sim(
        PresenceConfig(jitter=0.0),
        respond=failing(lambda: TransientError("x"), 1, "presence_settings"),
    )
    sim.run(20)
    assert sim.beat_times()[:2] == [0.0, 15.0]  # DEFAULT_INTERVAL until the settings load
    assert [name for _, name, _ in sim.calls].count("presence_settings") == 2
    assert sim.engine.stats().interval == 10.0


def test_server_interval_too_close_to_a_configured_timeout_is_logged(
    caplog: pytest.LogCaptureFixture,
) -> None:
    sim = Sim(PresenceConfig(timeout=11.0, jitter=0.2))
    with caplog.at_level(logging.WARNING, logger="presence_sdk"):
        sim.run(1)
    assert "flap offline" in caplog.text


def test_jitter_keeps_each_wait_within_its_bounds() -> None:
    sim = Sim(config(interval=10.0, jitter=0.2))
    sim.run(1000)
    times = sim.beat_times()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert len(gaps) > 80
    assert all(8.0 <= gap <= 12.0 for gap in gaps)
    assert max(gaps) - min(gaps) > 2.0  # really random, not a constant


def test_a_slow_beat_delays_the_next_one_instead_of_stacking() -> None:
    sim = Sim(config(interval=10.0))

    def slow(call: Call, now: float) -> Any:
        sim.now += 7.0  # the request takes 7 s
        return T0

    sim.respond = slow
    sim.run(40)
    times = sim.beat_times()
    assert [b - a for a, b in itertools.pairwise(times)] == [17.0, 17.0]


# -- retries ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "error",
    [
        lambda: TransientError("connection refused"),
        lambda: TransientError("HTTP 502 Bad Gateway", status=502),
        lambda: RateLimitedError("slow down"),
    ],
)
def test_transient_failures_are_retried_with_capped_backoff(
    error: Callable[[], PresenceError],
) -> None:
    sim = Sim(config(backoff_initial=0.5, backoff_max=0.8), respond=failing(error, 2))
    sim.run(5)
    first, second, third = sim.beat_times()[:3]
    assert (first, second, third) == (0.0, sim.sleeps[0][1], second + sim.sleeps[1][1])
    assert 0 <= sim.sleeps[0][1] <= 0.5
    assert 0 <= sim.sleeps[1][1] <= 0.8  # 1.0 capped
    stats = sim.engine.stats()
    assert (stats.beats_sent, stats.beats_failed, stats.retries) == (1, 0, 2)
    assert stats.consecutive_failures == 0
    assert sim.engine.state is PresenceState.STOPPED
    assert (PresenceState.STARTING, PresenceState.ONLINE) in sim.states


def test_exhausted_retries_fail_the_beat_then_the_schedule_goes_on() -> None:
    sim = Sim(config(max_attempts=3), respond=failing(lambda: TransientError("down"), 3))
    sim.run(15)
    first_beat = [t for t in sim.beat_times() if t < 10]
    assert len(first_beat) == 3
    stats = sim.engine.stats()
    assert (stats.beats_sent, stats.beats_failed, stats.retries) == (1, 1, 2)
    assert [str(e) for e in sim.errors] == ["down"]
    # The failed beat moved the client to DEGRADED, the next one back to ONLINE.
    moves = [new for _, new in sim.states]
    assert moves[:3] == [PresenceState.STARTING, PresenceState.DEGRADED, PresenceState.ONLINE]


def test_retries_of_one_beat_stay_within_the_interval() -> None:
    sim = Sim(
        config(interval=2.0, timeout=10.0, max_attempts=50, backoff_initial=1.0, backoff_max=1.0),
        respond=failing(lambda: TransientError("down"), 1000),
    )
    sim.run(1.99)
    assert all(t < 2.0 for t in sim.beat_times())
    assert sim.engine.stats().beats_failed == 1


def test_retry_after_is_honoured() -> None:
    sim = Sim(config(), respond=failing(lambda: RateLimitedError("429", retry_after=3.0), 1))
    sim.run(5)
    assert sim.beat_times()[:2] == [0.0, 3.0]


def test_retry_after_beyond_the_interval_postpones_the_next_beat() -> None:
    sim = Sim(config(), respond=failing(lambda: RateLimitedError("429", retry_after=15.0), 1))
    sim.run(30)
    assert sim.beat_times() == [0.0, 15.0, 25.0]
    assert sim.engine.stats().beats_failed == 1


def test_retry_after_is_capped_to_keep_the_user_online(caplog: pytest.LogCaptureFixture) -> None:
    # interval 10, timeout 30, no beat accepted yet: each wait is capped at
    # timeout - interval = 20 s from the 429 instead of a day; the third beat succeeds.
    sim = Sim(config(), respond=failing(lambda: RateLimitedError("429", retry_after=86400), 2))
    with caplog.at_level(logging.DEBUG, logger="presence_sdk"):
        sim.run(55)
    assert sim.beat_times() == [0.0, 20.0, 40.0, 50.0]
    warnings = [r for r in caplog.records if "Retry-After" in r.getMessage()]
    assert [r.levelno for r in warnings] == [logging.WARNING, logging.DEBUG]  # logged once


def test_retry_after_cap_counts_from_the_last_accepted_beat() -> None:
    calls = {"n": 0}

    def respond(call: Call, now: float) -> Any:
        if call.fn == "presence_session_beat":
            calls["n"] += 1
            if calls["n"] == 2:  # the beat at 10 s: the user is online until 30 s
                raise RateLimitedError("429", retry_after=86400)
        return T0

    sim = Sim(config(), respond=respond)
    sim.run(45)
    # The wait ends one interval before the user would go offline: 0 + 30 - 10 = 20,
    # i.e. the regular schedule; then beats go on every interval (the wait is cleared).
    assert sim.beat_times() == [0.0, 10.0, 20.0, 30.0, 40.0]


@pytest.mark.parametrize(
    ("error", "state", "leaves"),
    [
        (
            lambda: NotInstalledError("Could not find the function", code="PGRST202"),
            PresenceState.NOT_INSTALLED,
            0,  # the leave would fail the same way
        ),
        (lambda: RejectedError("no users row", code="PT404"), PresenceState.FAILED, 1),
    ],
)
def test_permanent_errors_are_not_retried_and_back_off(
    error: Callable[[], PresenceError], state: PresenceState, leaves: int
) -> None:
    beats = ("presence_session_beat", "presence_heartbeat")  # the 0.1 fallback fails too
    sim = Sim(config(idle_backoff_max=60.0), respond=failing(error, 10**6, beats))
    sim.run(300)
    times = sim.beat_times()
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[:4] == [10.0, 20.0, 40.0, 60.0]  # interval, doubling, capped: no hot loop
    assert all(gap == 60.0 for gap in gaps[3:])
    stats = sim.engine.stats()
    assert stats.retries == 0
    assert stats.beats_failed == len(times)
    assert (PresenceState.STARTING, state) in sim.states
    assert [n for _, n, _ in sim.calls].count("presence_session_leave") == leaves


# -- authentication -------------------------------------------------------------------


def test_expired_token_refreshes_once_and_retries_at_once() -> None:
    sim = Sim(
        config(), respond=failing(lambda: AuthenticationError("JWT expired", code="PGRST301"), 1)
    )
    sim.run(5)
    assert sim.refreshes == [0.0]
    assert sim.beat_times()[:2] == [0.0, 0.0]
    stats = sim.engine.stats()
    assert (stats.beats_sent, stats.beats_failed, stats.retries) == (1, 0, 1)


def test_refresh_failure_means_unauthenticated_without_spinning() -> None:
    def refresh(effect: Refresh) -> None:
        raise AuthenticationError("no signed-in session")

    sim = Sim(
        config(),
        respond=failing(lambda: AuthenticationError("not authenticated", code="28000"), 10**6),
        refresh=refresh,
    )
    sim.run(35)
    # One attempt + one refresh per interval: no retry storm.
    assert sim.beat_times() == [0.0, 10.0, 20.0, 30.0]
    assert sim.refreshes == [0.0, 10.0, 20.0, 30.0]
    assert sim.engine.stats().last_error is not None
    assert str(sim.engine.stats().last_error).startswith("not authenticated")
    assert (PresenceState.STARTING, PresenceState.UNAUTHENTICATED) in sim.states
    assert "presence_session_leave" not in [n for _, n, _ in sim.calls]


def test_a_refresh_that_does_not_help_is_not_repeated_within_the_beat() -> None:
    sim = Sim(
        config(), respond=failing(lambda: AuthenticationError("JWT expired", code="PGRST301"), 2)
    )
    sim.run(5)
    assert sim.refreshes == [0.0]
    assert sim.beat_times()[:2] == [0.0, 0.0]
    assert sim.engine.stats().beats_failed == 1


def test_refresh_carries_the_authorization_that_failed() -> None:
    seen: list[str | None] = []
    sim = Sim(
        config(),
        respond=failing(lambda: AuthenticationError("JWT expired", code="PGRST301"), 1),
        refresh=lambda effect: seen.append(effect.stale_authorization),
    )
    sim.run(1)
    assert seen == ["token@0.0"]


# -- status, stop, leave -------------------------------------------------------------


def test_set_status_wakes_the_loop_for_an_immediate_beat() -> None:
    sim = Sim(config())
    sim.events[4.0] = lambda engine: engine.set_status("away")
    sim.run(15)
    assert [(t, p["new_status"]) for t, n, p in sim.calls if n == "presence_session_beat"] == [
        (0.0, "online"),
        (4.0, "away"),
        (14.0, "away"),
    ]


def test_setting_the_same_status_does_not_beat_early() -> None:
    sim = Sim(config())
    sim.events[4.0] = lambda engine: engine.set_status("online")
    sim.run(15)
    assert sim.beat_times() == [0.0, 10.0]


def test_invalid_status_is_rejected() -> None:
    sim = Sim(config())
    for bad in ("offline", "ONLINE", "", None, 1):
        with pytest.raises(InvalidInputError):
            sim.engine.set_status(bad)  # type: ignore[arg-type]
    assert validate_status("busy") == "busy"
    assert sim.engine.status == "online"


def test_stop_during_a_retry_wait_sends_the_leave_and_no_more_attempts() -> None:
    sim = Sim(
        config(backoff_initial=5.0, backoff_max=5.0),
        respond=failing(lambda: TransientError("x"), 10),
    )
    sim.run(0.001)
    assert [n for _, n, _ in sim.calls] == ["presence_session_beat", "presence_session_leave"]
    assert sim.engine.state is PresenceState.STOPPED


def test_leave_is_sent_once_on_stop_unless_disabled() -> None:
    sim = Sim(config())
    sim.run(12)
    assert [n for _, n, _ in sim.calls].count("presence_session_leave") == 1
    assert [new for _, new in sim.states][-2:] == [PresenceState.STOPPING, PresenceState.STOPPED]

    quiet = Sim(config(leave_on_stop=False))
    quiet.run(12)
    assert "presence_session_leave" not in [n for _, n, _ in quiet.calls]


def test_leave_timeout_fits_in_the_stop_bound() -> None:
    timeouts: list[float] = []

    def respond(call: Call, now: float) -> Any:
        if call.fn == "presence_session_leave":
            timeouts.append(call.timeout)
        return T0

    sim = Sim(config(stop_timeout=0.3, request_timeout=2.0), respond=respond)
    sim.run(3)
    assert timeouts == [pytest.approx(0.3)]


def test_a_failed_leave_is_reported_not_raised() -> None:
    def respond(call: Call, now: float) -> Any:
        if call.fn == "presence_session_leave":
            raise TransientError("network down")
        return T0

    sim = Sim(config(), respond=respond)
    sim.run(3)
    assert [str(e) for e in sim.errors] == ["network down"]
    assert sim.engine.state is PresenceState.STOPPED


def test_callbacks_that_raise_are_logged_and_ignored(caplog: pytest.LogCaptureFixture) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("callback bug")

    engine = Heartbeat(config(), on_error=boom, on_state_change=boom)
    control = engine.begin_run()
    driver = Driver(engine.run(control))
    with caplog.at_level(logging.ERROR, logger="presence_sdk"):
        for effect in driver:
            if isinstance(effect, Call) and effect.fn == "presence_session_beat":
                driver.fail(RejectedError("refused"))
            elif isinstance(effect, Sleep):
                engine.request_stop(control)
    engine.end_run(control)
    assert "on_state_change callback raised" in caplog.text
    assert "on_error callback raised" in caplog.text
    assert engine.state is PresenceState.STOPPED


def test_beat_once_returns_the_server_time_or_raises_the_final_error() -> None:
    engine = Heartbeat(config(max_attempts=2, backoff_initial=0.01, backoff_max=0.01))
    driver = Driver(engine.beat_once())
    for effect in driver:
        assert isinstance(effect, Call)
        driver.reply(T0)
    assert driver.result == datetime.fromisoformat(T0)
    assert engine.state is PresenceState.STOPPED  # a manual beat does not start anything

    failing_driver = Driver(engine.beat_once())
    assert next(failing_driver).fn == "presence_session_beat"  # type: ignore[union-attr]
    failing_driver.fail(NotInstalledError("missing", code="PGRST202"))
    assert next(failing_driver).fn == "presence_heartbeat"  # type: ignore[union-attr]
    failing_driver.fail(NotInstalledError("missing", code="PGRST202"))
    with pytest.raises(NotInstalledError):
        next(failing_driver)
    stats = engine.stats()
    assert (stats.beats_sent, stats.beats_failed) == (1, 1)


def test_a_run_outlived_by_a_new_start_cannot_be_revived() -> None:
    engine = Heartbeat(config())
    old = engine.begin_run()
    engine.request_stop(old)
    new = engine.begin_run()
    assert old.stop_requested
    assert not new.stop_requested
    engine.end_run(old)  # the old thread finishing late does not touch the new run
    assert engine.state is PresenceState.STARTING


def test_after_fork_the_run_is_forgotten_quietly() -> None:
    engine = Heartbeat(config())
    control = engine.begin_run()
    assert engine.forget_run_after_fork() is True
    assert control.stop_requested
    assert control.quiet
    assert engine.state is PresenceState.STOPPED
    assert engine.forget_run_after_fork() is False
    leftovers = list(Driver(engine.run(control)))
    assert leftovers == []  # no leave from the child


# -- tenacity strategies ------------------------------------------------------------


def _state_with(error: BaseException | None, attempt: int, upcoming: float = 0.0) -> RetryCallState:
    state = RetryCallState(Retrying(), fn=None, args=(), kwargs={})
    state.attempt_number = attempt
    state.upcoming_sleep = upcoming
    if error is not None:
        state.set_exception((type(error), error, None))
    return state


def test_full_jitter_stays_under_the_exponential_cap() -> None:
    wait = WaitFullJitter(0.5, 4.0, random.Random(1))
    for attempt, bound in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 4.0), (10, 4.0), (200, 4.0)]:
        samples = [wait(_state_with(TransientError("x"), attempt)) for _ in range(200)]
        assert all(0.0 <= s <= bound for s in samples)
        assert max(samples) > bound * 0.8


def test_wait_retry_after_prefers_the_server_then_the_fallback() -> None:
    wait = WaitRetryAfter(WaitFullJitter(1.0, 1.0, random.Random(1)))
    assert wait(_state_with(RateLimitedError("429", retry_after=7.5), 1)) == 7.5
    assert wait(_state_with(AuthenticationError("expired"), 3)) == 0.0
    assert 0.0 <= wait(_state_with(RateLimitedError("429"), 1)) <= 1.0


def test_stop_at_deadline() -> None:
    now = {"t": 0.0}
    stop = StopAtDeadline(lambda: now["t"], max_attempts=3)
    stop.deadline = 10.0
    assert not stop(_state_with(TransientError("x"), 1, upcoming=5.0))
    assert stop(_state_with(TransientError("x"), 3, upcoming=0.0))
    now["t"] = 8.0
    assert stop(_state_with(TransientError("x"), 1, upcoming=5.0))
    assert not stop(_state_with(AuthenticationError("x"), 5, upcoming=0.0))


# -- queries and the driver ----------------------------------------------------------


def _run_query(
    query: Query[Any], answers: list[Any], refresh_error: PresenceError | None = None
) -> tuple[Any, list[Effect]]:
    effects: list[Effect] = []
    driver = Driver(query_effects(query, 1.0))
    for effect in driver:
        effects.append(effect)
        if isinstance(effect, Refresh):
            if refresh_error is not None:
                driver.fail(refresh_error)
            continue
        answer = answers.pop(0)
        if isinstance(answer, PresenceError):
            driver.fail(answer)
        else:
            driver.reply(answer)
    return driver.result, effects


def test_query_refreshes_once_on_an_expired_token() -> None:
    query: Query[int] = Query("presence_counts", {}, int)
    result, effects = _run_query(query, [AuthenticationError("expired"), "42"])
    assert result == 42
    assert [type(e).__name__ for e in effects] == ["Call", "Refresh", "Call"]


def test_query_raises_the_original_error_when_refresh_fails() -> None:
    query: Query[int] = Query("presence_counts", {}, int)
    with pytest.raises(AuthenticationError, match="expired") as info:
        _run_query(query, [AuthenticationError("expired")], AuthenticationError("no session"))
    assert str(info.value.__cause__) == "no session"


def test_query_other_errors_propagate_without_refresh() -> None:
    query: Query[int] = Query("presence_counts", {}, int)
    with pytest.raises(TransientError):
        _run_query(query, [TransientError("down")])


def test_empty_lookup_needs_no_io() -> None:
    result, effects = _run_query(lookup([]), [])
    assert result == {}
    assert effects == []


def test_driver_result_before_the_end_is_an_error() -> None:
    driver: Driver[Any] = Driver(query_effects(Query("presence_counts", {}), 1.0))
    with pytest.raises(RuntimeError):
        _ = driver.result
    next(driver)
    driver.close()


# -- hardening: answers, settings, retries counted, callbacks ---------------------------


@pytest.mark.parametrize("answer", [None, "", "soon", {"at": T0}, [T0], 42, True])
def test_a_heartbeat_answer_that_is_not_a_timestamp_is_transient(answer: Any) -> None:
    with pytest.raises(TransientError, match="not a timestamp"):
        parse_heartbeat_time(answer)
    assert parse_heartbeat_time(T0) == datetime.fromisoformat(T0)


def test_not_a_timestamp_fails_the_beat_like_any_transient_error() -> None:
    sim = Sim(config(max_attempts=2), respond=lambda call, now: {"unexpected": True})
    sim.run(25)
    stats = sim.engine.stats()
    assert (stats.beats_sent, stats.beats_failed, stats.retries) == (0, 3, 3)
    # The normal schedule (interval after each failed beat and its retry): no backoff.
    assert [int(t) for t in sim.beat_times()[::2]] == [0, 10, 20]
    assert (PresenceState.STARTING, PresenceState.DEGRADED) in sim.states
    assert all(isinstance(e, TransientError) for e in sim.errors)


@pytest.mark.parametrize(
    ("interval", "timeout", "expected"),
    [
        (15, 45, (15.0, 45.0)),  # sane: unchanged, no problem reported
        (-5, 45, (15.0, 45.0)),
        (0, 9, (3.0, 9.0)),
        (float("nan"), 45, (15.0, 45.0)),
        ("x", 45, (15.0, 45.0)),
        (100, 45, (22.5, 45.0)),
        (0.01, 45, (1.0, 45.0)),
        (15, 0, (15.0, 45.0)),
        (15, None, (15.0, 45.0)),
        (15, float("inf"), (15.0, 45.0)),
    ],
)
def test_server_timings_are_clamped_into_what_the_sql_allows(
    interval: Any, timeout: Any, expected: tuple[float, float]
) -> None:
    good_interval, good_timeout, problem = clamp_server_timing(interval, timeout)
    assert (good_interval, good_timeout) == expected
    assert (problem is None) == ((interval, timeout) == (15, 45))


def test_a_failed_refresh_is_not_a_retry() -> None:
    def refresh(effect: Refresh) -> None:
        raise AuthenticationError("refresh token revoked")

    sim = Sim(
        config(),
        respond=failing(lambda: AuthenticationError("JWT expired", code="PGRST301"), 10**6),
        refresh=refresh,
    )
    sim.run(25)
    assert sim.refreshes == [0.0, 10.0, 20.0]
    assert sim.engine.stats().retries == 0  # no retry request was ever sent


def test_callbacks_held_in_a_section_run_after_it_in_order() -> None:
    notifier = Notifier()
    seen: list[str] = []

    def record(word: str) -> None:
        seen.append(word)
        if word == "first":  # an event raised by a callback waits for it to return
            notifier.post("cb", record, "raised-inside")
            seen.append("first-returned")

    with holding_callbacks():
        notifier.post("cb", record, "first")
        notifier.post("cb", record, "second")
        assert seen == []  # nothing runs inside the section
    assert seen == ["first", "first-returned", "second", "raised-inside"]
    notifier.post("cb", record, "outside")  # outside a section: at once
    assert seen[-1] == "outside"
