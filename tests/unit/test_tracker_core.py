"""The I/O-free tracker core, driven with a fake clock (no threads, no sockets).

The fake server (:class:`tracker_support.FakeSQL`) answers ``presence_track_beat`` and
``presence_track_end`` the way the sessions SQL does, errors included: all or
nothing per call, a DETAIL naming at most five offenders, a message counting them all.
"""

from __future__ import annotations

import logging
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from tracker_support import T0, FakeSQL

from presence_sdk import PresenceState, TrackerConfig
from presence_sdk._core import Call, Driver, Effect, RunControl, Sleep
from presence_sdk._exceptions import (
    InvalidInputError,
    NotInstalledError,
    PermissionDeniedError,
    PresenceError,
    RateLimitedError,
    RejectedError,
    SessionsRejectedError,
    TransientError,
)
from presence_sdk._track_replies import parse_track_result
from presence_sdk._tracker_core import Tracker


def config(**overrides: Any) -> TrackerConfig:
    values: dict[str, Any] = {"interval": 10.0, "timeout": 30.0, "jitter": 0.0, "linger": 0.5}
    return TrackerConfig(**(values | overrides))


@dataclass
class Sim:
    """Drives a Tracker with a fake clock; Calls go to ``respond(call)``."""

    config: TrackerConfig
    sql: FakeSQL = field(default_factory=FakeSQL)
    respond: Callable[[Call], Any] | None = None
    call_seconds: float = 0.0  # fake time each call takes
    now: float = 0.0
    calls: list[tuple[float, Call]] = field(default_factory=list)
    errors: list[PresenceError] = field(default_factory=list)
    states: list[tuple[PresenceState, PresenceState]] = field(default_factory=list)
    events: dict[float, Callable[[Tracker], object]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.engine = Tracker(
            self.config,
            clock=lambda: self.now,
            rng=random.Random(7),
            on_error=self.errors.append,
            on_state_change=lambda old, new: self.states.append((old, new)),
        )

    def user(self) -> str:
        user = str(uuid.uuid4())
        self.sql.users.add(user)
        return user

    def track(self, count: int = 1, **kwargs: Any) -> list[uuid.UUID]:
        return [self.engine.track(self.user(), **kwargs)[0] for _ in range(count)]

    def perform(self, effect: Effect, stop_at: float, control: RunControl) -> Any:
        if isinstance(effect, Call):
            self.calls.append((self.now, effect))
            self.now += self.call_seconds
            return (self.respond or self.sql)(effect)
        assert isinstance(effect, Sleep)
        wake = self.now + effect.seconds
        due = sorted(t for t in self.events if self.now <= t < wake)
        if due:  # something happens during the sleep (the app tracks, untracks...)
            self.now = due[0]
            self.events.pop(due[0])(self.engine)
        elif wake >= stop_at and not control.stop_requested:
            self.now = stop_at
            self.engine.request_stop(control)
        else:
            self.now = wake
        return None

    def run(self, seconds: float) -> None:
        """Run until ``seconds`` of fake time, then stop (ends included)."""
        control = self.engine.begin_run()
        driver = Driver(self.engine.run(control))
        for effect in driver:
            try:
                driver.reply(self.perform(effect, seconds, control))
            except PresenceError as exc:
                driver.fail(exc)
        self.engine.end_run(control)

    def sent(self, fn: str) -> list[tuple[float, list[Any]]]:
        """(time, items) of each call of ``fn``: entries (beats) or session ids (ends)."""
        key = "sessions" if fn == "presence_track_beat" else "session_ids"
        return [(t, list(c.params[key])) for t, c in self.calls if c.fn == fn]

    def beat_sizes(self) -> list[tuple[float, int]]:
        return [(t, len(items)) for t, items in self.sent("presence_track_beat")]


def ids_of(entries: list[dict[str, Any]]) -> set[str]:
    return {e["session_id"] for e in entries}


# -- schedule, chunking, flushes --------------------------------------------------------


def test_one_call_per_interval_for_everything_tracked_then_stop_ends_all() -> None:
    sim = Sim(config())
    sessions = sim.track(3)
    sim.run(25)
    assert sim.beat_sizes() == [(0.0, 3), (10.0, 3), (20.0, 3)]
    assert [name for _, name in [(t, c.fn) for t, c in sim.calls]][-1] == "presence_track_end"
    ((_, ended),) = sim.sent("presence_track_end")
    assert set(ended) == {str(s) for s in sessions}
    assert sim.sql.live == {}
    stats = sim.engine.stats()
    assert (stats.rounds, stats.batches_sent, stats.sessions_beaten, stats.sessions_ended) == (
        3,
        4,
        9,
        3,
    )
    assert stats.sessions == 3  # still registered: a later start() beats them again
    assert sim.states[:2] == [
        (PresenceState.STOPPED, PresenceState.STARTING),
        (PresenceState.STARTING, PresenceState.ONLINE),
    ]
    assert sim.states[-1] == (PresenceState.STOPPING, PresenceState.STOPPED)


def test_entries_carry_user_status_device_and_metadata() -> None:
    sim = Sim(config())
    user = sim.user()
    sid, _ = sim.engine.track(user, status="busy", device="ws", metadata={"room": 7})
    plain, _ = sim.engine.track(sim.user())
    sim.run(5)
    (_, entries) = sim.sent("presence_track_beat")[0]
    assert entries == [
        {
            "session_id": str(sid),
            "user_id": user,
            "status": "busy",
            "device": "ws",
            "metadata": {"room": 7},
        },
        {"session_id": str(plain), "user_id": entries[1]["user_id"], "status": "online"},
    ]


def test_rounds_are_chunked_by_batch_size() -> None:
    sim = Sim(config(batch_size=2))
    sim.track(5)
    sim.run(15)
    assert sim.beat_sizes() == [(0.0, 2), (0.0, 2), (0.0, 1), (10.0, 2), (10.0, 2), (10.0, 1)]
    assert [len(ids) for _, ids in sim.sent("presence_track_end")] == [2, 2, 1]


def test_track_untrack_and_set_status_are_flushed_promptly_and_batched() -> None:
    sim = Sim(config())
    first = sim.track(1)[0]
    burst: list[uuid.UUID] = []
    sim.events[3.0] = lambda engine: burst.extend(sim.track(100))
    sim.events[5.0] = lambda engine: engine.untrack(first)
    sim.events[6.0] = lambda engine: engine.set_status(burst[0], "away")
    sim.run(9)
    beats = sim.sent("presence_track_beat")
    # The burst goes out as one call, `linger` after the first track of it.
    assert [(t, len(e)) for t, e in beats] == [(0.0, 1), (3.5, 100), (6.5, 1)]
    assert beats[2][1] == [
        {"session_id": str(burst[0]), "user_id": beats[2][1][0]["user_id"], "status": "away"}
    ]
    ends = sim.sent("presence_track_end")
    assert ends[0] == (5.5, [str(first)])  # ended promptly, alone
    assert str(first) not in ids_of(sim.sent("presence_track_beat")[-1][1])
    assert sim.engine.stats().rounds == 1  # flushes are not rounds


def test_untrack_then_track_again_before_the_flush_sends_no_end() -> None:
    sim = Sim(config())
    user = sim.user()
    sid, _ = sim.engine.track(user)

    def flap(engine: Tracker) -> None:
        engine.untrack(sid)
        engine.track(user, session_id=sid, status="away")

    sim.events[2.0] = flap
    sim.run(5)
    assert [t for t, _ in sim.sent("presence_track_end")] == [5.0]  # only the stop's
    assert sim.sent("presence_track_beat")[1][1][0]["status"] == "away"


def test_an_unchanged_re_track_or_status_needs_no_flush() -> None:
    sim = Sim(config())
    user = sim.user()
    sid, due = sim.engine.track(user, device="a")
    assert due
    assert sim.engine.track(user, session_id=sid, device="a") == (sid, False)
    assert sim.engine.track(user, session_id=sid) == (sid, False)  # None keeps the device
    assert sim.engine.set_status(sid, "online") == (True, False)
    assert sim.engine.set_status(uuid.uuid4(), "away") == (False, False)
    assert sim.engine.untrack(uuid.uuid4()) == (False, False)


# -- bad input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda t, u: t.track("nope"), "user_id must be a UUID"),
        (lambda t, u: t.track(u, session_id="x" * 500), "session_id must be a UUID"),
        (lambda t, u: t.track(u, status="offline"), "status must be one of"),
        (lambda t, u: t.track(u, status=None), "status must be one of"),
        (lambda t, u: t.track(u, device="d" * 65), "device must be 1 to 64"),
        (lambda t, u: t.track(u, metadata=[1, 2]), "metadata must be a JSON object"),
        (lambda t, u: t.track(u, metadata={"k": "v" * 2000}), "at most 1024 bytes"),
        (lambda t, u: t.set_status("nope", "away"), "session_id must be a UUID"),
        (lambda t, u: t.set_status(uuid.uuid4(), "gone"), "status must be one of"),
        (lambda t, u: t.untrack(12), "session_id must be a UUID"),
    ],
)
def test_bad_input_raises_at_the_call_and_changes_nothing(
    call: Callable[[Tracker, str], object], message: str
) -> None:
    sim = Sim(config())
    kept = sim.track(2)
    before = (sim.engine.tracked(), sim.engine.stats())
    with pytest.raises(InvalidInputError, match=message):
        call(sim.engine, sim.user())
    assert (sim.engine.tracked(), sim.engine.stats()) == before
    assert len(kept) == 2


def test_a_session_id_tracked_for_another_user_is_refused() -> None:
    sim = Sim(config())
    sid, _ = sim.engine.track(sim.user())
    with pytest.raises(InvalidInputError, match="tracked for user"):
        sim.engine.track(sim.user(), session_id=sid)
    assert len(sim.engine.tracked()) == 1


# -- retries and states -----------------------------------------------------------------


def test_transient_failures_are_retried_within_the_interval() -> None:
    sim = Sim(config(backoff_initial=0.1, backoff_max=0.2))
    sim.track(2)
    failures = iter([TransientError("502"), TransientError("timeout")])

    def respond(call: Call) -> Any:
        if call.fn == "presence_track_beat" and (error := next(failures, None)):
            raise error
        return sim.sql(call)

    sim.respond = respond
    sim.run(5)
    times = [t for t, _ in sim.beat_sizes()]
    assert len(times) == 3
    assert times[-1] - times[0] < 1.0  # backoff, not the next interval
    stats = sim.engine.stats()
    assert (stats.retries, stats.batches_failed, stats.state) == (2, 0, PresenceState.STOPPED)
    assert (PresenceState.STARTING, PresenceState.ONLINE) in sim.states
    assert sim.errors == []


def test_a_round_that_keeps_failing_is_degraded_reported_and_never_raises() -> None:
    sim = Sim(config(max_attempts=3, backoff_initial=0.1, backoff_max=0.2))
    sim.track(3)

    def respond(call: Call) -> Any:
        if call.fn == "presence_track_beat" and sim.now < 15:
            raise TransientError("database unavailable", status=503)
        return sim.sql(call)

    sim.respond = respond
    sim.run(25)
    assert (PresenceState.STARTING, PresenceState.DEGRADED) in sim.states
    assert (PresenceState.DEGRADED, PresenceState.ONLINE) in sim.states  # recovered at 20 s
    assert len(sim.errors) == 2  # one report per failed call, after its retries
    assert all(isinstance(e, TransientError) for e in sim.errors)
    stats = sim.engine.stats()
    assert (stats.batches_failed, stats.retries, stats.consecutive_failures) == (2, 4, 0)


@pytest.mark.parametrize(
    ("error", "state", "ends"),
    [
        (NotInstalledError("Could not find the function", code="PGRST202"), "not_installed", 0),
        (PermissionDeniedError("permission denied", code="42501"), "failed", 0),
        (RejectedError("settings row missing", code="55000"), "failed", 1),  # worth a try
    ],
)
def test_refusals_retries_cannot_fix_back_off_without_a_hot_loop(
    error: PresenceError, state: str, ends: int
) -> None:
    sim = Sim(config(idle_backoff_max=40.0))
    sim.track(2)

    def respond(call: Call) -> Any:
        if call.fn.startswith("presence_track"):
            raise error
        return sim.sql(call)

    sim.respond = respond
    for at in (1.0, 2.0, 3.0, 12.0):  # the app keeps tracking: no flush while refused
        sim.events[at] = lambda engine: sim.track(1)
    sim.run(150)
    times = [t for t, _ in sim.beat_sizes()]
    assert times == [0.0, 10.0, 30.0, 70.0, 110.0]  # interval, doubling, capped at 40 s
    assert sim.engine.stats().state is PresenceState.STOPPED
    assert (PresenceState.STARTING, PresenceState(state)) in sim.states
    assert sim.engine.stats().retries == 0
    assert len(sim.sent("presence_track_end")) == ends  # nothing that is sure to fail


def test_retry_after_is_capped_to_keep_the_sessions_alive() -> None:
    sim = Sim(config(max_attempts=1))
    sim.track(1)
    answers = iter([None, RateLimitedError("slow down", retry_after=3600.0)])

    def respond(call: Call) -> Any:
        if call.fn == "presence_track_beat" and (error := next(answers, None)):
            raise error
        return sim.sql(call)

    sim.respond = respond
    sim.run(45)
    # Beat at 0 ok, at 10 told to wait an hour: waited until 30 - 10 = 20 s instead.
    assert [t for t, _ in sim.beat_sizes()] == [0.0, 10.0, 20.0, 30.0, 40.0]


# -- entries the server refuses -----------------------------------------------------------


def test_a_session_of_another_user_is_dropped_and_the_rest_beaten_at_once() -> None:
    sim = Sim(config())
    good = sim.track(4)
    theirs = sim.track(1)[0]
    sim.sql.owner[str(theirs)] = str(uuid.uuid4())  # the id is someone else's session
    sim.run(15)
    beats = sim.beat_sizes()
    assert beats[:2] == [(0.0, 5), (0.0, 4)]  # rejected, then the rest in the same round
    assert beats[2] == (10.0, 4)
    assert set(sim.sql.live) == set()  # ended on stop
    assert sim.engine.tracked().keys() == set(good)
    (report,) = sim.errors
    assert isinstance(report, SessionsRejectedError)
    assert report.session_ids == (theirs,)
    assert report.code == "PT409"
    assert "belong to other users" in str(report)
    stats = sim.engine.stats()
    assert (stats.sessions_dropped, stats.state, stats.batches_failed) == (
        1,
        PresenceState.STOPPED,
        0,
    )
    assert (PresenceState.STARTING, PresenceState.ONLINE) in sim.states


def test_every_session_of_an_unknown_user_is_dropped_across_calls() -> None:
    sim = Sim(config(batch_size=3))
    ghost = str(uuid.uuid4())  # no public.users row (deleted, or never created)
    # Calls of 3 in tracking order: [ghost, good, good], [ghost, ghost, good].
    ghosts = [sim.engine.track(ghost)[0]]
    good = sim.track(2)
    ghosts += [sim.engine.track(ghost)[0] for _ in range(2)]
    good += sim.track(1)
    sim.run(5)
    (report,) = sim.errors
    assert isinstance(report, SessionsRejectedError)
    assert set(report.session_ids) == set(ghosts)
    assert report.user_ids == (uuid.UUID(ghost),)
    assert report.code == "23503"
    # The first call is rejected and re-sent without the ghost; the second call never
    # carries the ghost's other sessions: one rejection for all three.
    assert [n for _, n in sim.beat_sizes()] == [3, 2, 1]
    assert set(sim.engine.tracked()) == set(good)


def test_entries_the_server_finds_invalid_are_dropped_by_position() -> None:
    sim = Sim(config())
    sim.sql.invalid_devices.add("tablet")  # a server with a stricter rule than ours
    sim.track(2)
    bad = sim.track(1, device="tablet")[0]
    sim.track(2)
    sim.run(5)
    (report,) = sim.errors
    assert isinstance(report, SessionsRejectedError)
    assert report.session_ids == (bad,)
    assert [n for _, n in sim.beat_sizes()] == [5, 4]


def test_many_offenders_are_found_by_splitting_not_five_per_call() -> None:
    sim = Sim(config(batch_size=1000))
    sim.track(950)
    ghosts = [sim.engine.track(str(uuid.uuid4()))[0] for _ in range(50)]
    sim.run(5)
    assert set(sim.engine.tracked()).isdisjoint(ghosts)
    assert len(sim.engine.tracked()) == 950
    assert sim.engine.stats().sessions_dropped == 50
    round_one = [n for t, n in sim.beat_sizes() if t == 0.0]
    # Dropping the five named per call and re-sending the rest would take 11 calls of
    # about 1,000 entries (each validated by the server): splitting sends far fewer
    # entries in all, at the price of a few more (cheap) calls.
    assert sum(round_one) < 0.6 * 11 * 975
    assert len(round_one) <= 2 * 11
    assert sim.engine.stats().sessions_beaten == 950  # every good one, in the first round
    assert len(sim.sql.live) == 0  # ended on stop


def test_a_rejection_that_names_nothing_fails_the_call_without_dropping() -> None:
    sim = Sim(config())
    sim.track(3)

    def respond(call: Call) -> Any:
        if call.fn == "presence_track_beat":
            raise RejectedError("presence: 2 user ids have no public.users row", code="23503")
        return sim.sql(call)

    sim.respond = respond
    sim.run(5)
    assert sim.engine.stats().sessions == 3
    assert sim.engine.stats().sessions_dropped == 0
    assert isinstance(sim.errors[0], RejectedError)
    assert (PresenceState.STARTING, PresenceState.FAILED) in sim.states


def test_a_lower_server_batch_limit_is_adopted() -> None:
    sim = Sim(config(batch_size=10))
    sim.sql.max_batch = 4
    sim.track(10)
    sim.run(15)
    assert [n for t, n in sim.beat_sizes()] == [10, 4, 4, 2, 4, 4, 2]
    assert sim.errors == []


# -- stop, runs, fork --------------------------------------------------------------------


def test_stop_ends_pending_untracks_too_and_is_bounded() -> None:
    sim = Sim(config(batch_size=2, stop_timeout=2.5), call_seconds=1.0)
    sessions = sim.track(6)
    sim.events[5.0] = lambda engine: engine.untrack(sessions[0])
    sim.run(5.2)  # stops during the linger: the untracked one is ended by stop
    ends = sim.sent("presence_track_end")
    assert str(sessions[0]) in ends[0][1]
    # One call per second, 2.5 s allowed: 3 calls of the 3 needed were sent...
    assert len(ends) == 3
    sim2 = Sim(config(batch_size=2, stop_timeout=1.5), call_seconds=1.0)
    sim2.track(6)
    sim2.run(5)
    assert len(sim2.sent("presence_track_end")) == 2  # ...and never past the bound


def test_end_on_stop_false_ends_nothing() -> None:
    sim = Sim(config(end_on_stop=False))
    sim.track(2)
    sim.run(5)
    assert sim.sent("presence_track_end") == []
    assert len(sim.sql.live) == 2


def test_a_superseded_run_ends_nothing_and_wakes_the_new_one() -> None:
    engine = Tracker(config())
    engine.track(str(uuid.uuid4()))
    old = engine.begin_run()
    engine.request_stop(old)
    new = engine.begin_run()
    assert list(Driver(engine.end_all(old))) == []
    assert engine.end_run(old) is True  # the current run beats everything again now
    driver = Driver(engine.run(new))
    first = next(driver)
    assert isinstance(first, Call)
    assert first.fn == "presence_track_beat"


def test_a_forked_child_forgets_the_parents_sessions() -> None:
    engine = Tracker(config())
    engine.track(str(uuid.uuid4()))
    engine.untrack(engine.track(str(uuid.uuid4()))[0])
    engine.begin_run()
    assert engine.forget_after_fork() == (True, 1)
    stats = engine.stats()
    assert (stats.sessions, stats.pending_ends, stats.state) == (0, 0, PresenceState.STOPPED)


def test_settings_are_read_after_the_first_accepted_call() -> None:
    sim = Sim(TrackerConfig(jitter=0.0, linger=0.1))
    sim.track(1)
    sim.run(25)
    names = [c.fn for _, c in sim.calls]
    assert names[:2] == ["presence_track_beat", "presence_settings"]
    assert sim.engine.stats().interval == 10.0
    assert [t for t, _ in sim.beat_sizes()] == [0.0, 10.0, 20.0]


@pytest.mark.parametrize("answer", [None, "2025-01-01", {"beat_at": T0}, {"count": 1}, [1]])
def test_an_answer_that_is_not_the_sqls_is_transient(answer: Any) -> None:
    with pytest.raises(TransientError, match="not the presence SQL's"):
        parse_track_result(answer, "beat_at")
    assert parse_track_result({"beat_at": T0, "count": 2}, "beat_at").count == 2


def test_callbacks_that_raise_are_logged(caplog: pytest.LogCaptureFixture) -> None:
    def boom(*args: object) -> None:
        raise RuntimeError("app bug")

    engine = Tracker(config(), on_error=boom, on_state_change=boom)
    with caplog.at_level(logging.ERROR, logger="presence_sdk"):
        engine.begin_run()
    assert "on_state_change callback raised" in caplog.text
