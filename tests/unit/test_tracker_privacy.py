"""Invisible mode through the trackers (``set_invisible``): real supabase-py clients with
the service role key, the network mocked with respx, ``presence_set_invisible_for``
answered like the privacy migration does (:class:`tracker_support.FakeSQL`).
The same calls against the real SQL: tests/integration/test_sessions_e2e.py."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import respx
from client_support import URL, pgrst_error, rpc_path, settings_json, wait_until
from supabase import AsyncClient, AsyncClientOptions, Client, ClientOptions
from tracker_support import FakeSQL

from presence_sdk import (
    AsyncPresenceTracker,
    InvalidInputError,
    PermissionDeniedError,
    PresenceTracker,
    RejectedError,
    TrackerConfig,
    TransientError,
)
from presence_sdk.testing import make_token

SERVICE_KEY = make_token("service_role", expires_in=86400)
FN = "presence_set_invisible_for"
FAST = TrackerConfig(
    interval=0.2, timeout=2.0, jitter=0.0, linger=0.01, backoff_initial=0.01,
    backoff_max=0.02, request_timeout=0.5, stop_timeout=1.0,
)  # fmt: skip


@dataclasses.dataclass
class Server:
    router: respx.MockRouter
    sql: FakeSQL

    def bodies(self) -> list[Any]:
        return [json.loads(call.request.content) for call in self.router[FN].calls]

    def user(self) -> str:
        uid = str(uuid.uuid4())
        self.sql.users.add(uid)
        return uid


@pytest.fixture
def server() -> Iterator[Server]:
    sql = FakeSQL()
    with respx.mock(base_url=URL, assert_all_called=False) as router:
        for fn in ("presence_track_beat", "presence_track_end", FN):
            router.post(rpc_path(fn), name=fn).mock(side_effect=sql.handle)
        router.post(rpc_path("presence_settings"), name="presence_settings").mock(
            return_value=httpx.Response(200, json=settings_json())
        )
        yield Server(router, sql)


@pytest.fixture(autouse=True)
def no_thread_left_behind() -> Iterator[None]:
    yield
    wait_until(
        lambda: not [t for t in threading.enumerate() if t.name == "presence-tracker"],
        timeout=3.0,
    )


def admin() -> Client:
    options = ClientOptions(httpx_client=httpx.Client(), auto_refresh_token=False)
    return Client(URL, SERVICE_KEY, options)


def async_admin() -> AsyncClient:
    options = AsyncClientOptions(httpx_client=httpx.AsyncClient(), auto_refresh_token=False)
    return AsyncClient(URL, SERVICE_KEY, options)


def test_set_invisible_hides_many_users_in_one_request(server: Server) -> None:
    a, b = server.user(), server.user()
    tracker = PresenceTracker(admin(), config=FAST)  # need not be running
    assert tracker.set_invisible([a, uuid.UUID(b), a]) == 2
    assert server.sql.invisible == {a, b}
    assert server.bodies() == [{"user_ids": [a, b], "invisible": True}]  # deduplicated
    request = server.router[FN].calls[0].request
    assert request.headers["authorization"] == f"Bearer {SERVICE_KEY}"
    assert tracker.set_invisible([a]) == 0  # already invisible: nothing changed
    assert tracker.set_invisible((u for u in [a]), invisible=False) == 1
    assert server.sql.invisible == {b}


def test_set_invisible_while_the_tracker_runs(server: Server) -> None:
    with PresenceTracker(admin(), config=FAST) as tracker:
        uid = server.user()
        sid = tracker.track(uid)
        wait_until(lambda: str(sid) in server.sql.live)
        assert tracker.set_invisible([uid]) == 1
        beats = len(server.router["presence_track_beat"].calls)
        wait_until(lambda: len(server.router["presence_track_beat"].calls) > beats)
        assert str(sid) in server.sql.live  # the session stays alive while invisible
    assert tracker.stats.batches_failed == 0


@pytest.mark.parametrize(
    ("user_ids", "invisible", "words"),
    [
        ("00000000-0000-4000-8000-000000000001", True, "must be an iterable of UUIDs"),
        (uuid.UUID(int=1), True, "must be an iterable of UUIDs"),
        (["not-a-uuid"], True, "each of user_ids must be a UUID"),
        ([None], True, "each of user_ids must be a UUID"),
        ([str(uuid.UUID(int=1))], "yes", "invisible must be True or False"),
        ([str(uuid.UUID(int=1))], None, "invisible must be True or False"),
        ((uuid.UUID(int=i) for i in range(10_001)), True, "at most 10000 users per call"),
    ],
)
def test_bad_input_raises_before_any_io(
    server: Server, user_ids: Any, invisible: Any, words: str
) -> None:
    tracker = PresenceTracker(admin(), config=FAST)
    with pytest.raises(InvalidInputError, match=words):
        tracker.set_invisible(user_ids, invisible)
    assert server.router[FN].calls.call_count == 0


def test_no_users_asks_nothing(server: Server) -> None:
    assert PresenceTracker(admin(), config=FAST).set_invisible([]) == 0
    assert server.router[FN].calls.call_count == 0


def test_refusals_reach_the_caller_and_change_nothing(server: Server) -> None:
    known, unknown = server.user(), str(uuid.uuid4())
    tracker = PresenceTracker(admin(), config=FAST)
    with pytest.raises(RejectedError, match=r"have no public\.users row") as refused:
        tracker.set_invisible([known, unknown])
    assert refused.value.code == "23503"
    assert unknown in str(refused.value.details)
    assert server.sql.invisible == set()


def test_without_the_service_role_the_server_says_permission_denied(server: Server) -> None:
    server.router[FN].side_effect = None
    server.router[FN].return_value = pgrst_error(
        403, "42501", "permission denied for function presence_set_invisible_for"
    )
    with pytest.raises(PermissionDeniedError):
        PresenceTracker(admin(), config=FAST).set_invisible([server.user()])


def test_a_transient_fault_is_not_retried_but_raised(server: Server) -> None:
    server.router[FN].side_effect = [httpx.ConnectError("refused"), server.sql.handle]
    tracker = PresenceTracker(admin(), config=FAST)
    uid = server.user()
    with pytest.raises(TransientError):
        tracker.set_invisible([uid])
    assert server.sql.invisible == set()
    assert tracker.set_invisible([uid]) == 1  # the app decides to try again


def test_async_set_invisible(server: Server) -> None:
    async def main() -> None:
        a, b = server.user(), server.user()
        async with AsyncPresenceTracker(async_admin(), config=FAST) as tracker:
            assert await tracker.set_invisible([a, b]) == 2
            assert await tracker.set_invisible([b], invisible=False) == 1
            assert await tracker.set_invisible([]) == 0
            with pytest.raises(InvalidInputError, match="iterable of UUIDs"):
                await tracker.set_invisible(a)
            with pytest.raises(RejectedError):
                await tracker.set_invisible([str(uuid.uuid4())])
        assert server.sql.invisible == {a}
        assert server.bodies()[0] == {"user_ids": [a, b], "invisible": True}

    asyncio.run(main())
