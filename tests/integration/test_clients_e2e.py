"""The heartbeat clients end to end: supabase-py → PostgREST emulation → PostgreSQL.

Every request goes through a real supabase client and its httpx session; respx hands
it to :class:`presence_sdk.testing.PostgRESTEmulator`, which runs it like PostgREST
(role from the JWT, claims in ``request.jwt.claims``, RLS and grants as on Supabase).
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
from e2e_support import async_client, async_poll, poll, routed, row, set_timings, sync_client

from presence_sdk import AsyncPresenceClient, PresenceClient, PresenceConfig, PresenceState
from presence_sdk._exceptions import NotInstalledError
from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration

SRC = Path(__file__).resolve().parents[2] / "src"
QUICK = PresenceConfig(interval=0.2, request_timeout=2.0, stop_timeout=2.0, jitter=0.0)


def test_sync_client_lifecycle_against_the_database(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    with routed(presence_db) as (emulator, router):
        presence = PresenceClient(sync_client(emulator, emulator.user_token(user)), config=QUICK)
        before = presence_db.query("SELECT now() AS now")[0]["now"]
        presence.start()
        poll(lambda: row(presence_db, user)["online"])
        state = row(presence_db, user)
        assert (state["stored_status"], state["status"]) == ("online", "online")
        # The server's clock, not the client's: the time the RPC returned is the row's.
        poll(lambda: presence.stats.last_success is not None)
        assert before <= state["last_heartbeat"] <= state["now"]
        assert presence.stats.timeout == 45.0  # read from presence_settings()

        presence.set_status("away")
        poll(lambda: row(presence_db, user)["status"] == "away", timeout=2.0)
        assert presence.get(user).status == "away"
        assert presence.is_online(user) is True

        presence.stop()
        after = row(presence_db, user)
        assert (after["stored_status"], after["status"], after["online"]) == (
            "offline",
            "offline",
            False,
        )
        assert presence.get(user).online is False
        assert presence.state is PresenceState.STOPPED
        assert router["rpc"].call_count >= 4


@pytest.mark.asyncio
async def test_async_client_lifecycle_against_the_database(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    with routed(presence_db) as (emulator, _):
        supabase = async_client(emulator, emulator.user_token(user))
        async with AsyncPresenceClient(supabase, config=QUICK) as presence:
            await async_poll(lambda: row(presence_db, user)["online"])
            presence.set_status("busy")
            await async_poll(lambda: row(presence_db, user)["status"] == "busy")
            assert (await presence.get(user)).status == "busy"
            beat = presence.stats.last_success
            assert beat is not None
            assert beat <= row(presence_db, user)["now"]
        assert row(presence_db, user)["online"] is False
        assert (await presence.counts()).offline == 1


def test_killed_client_reads_offline_after_the_timeout(presence_db: PresenceDatabase) -> None:
    set_timings(presence_db, timeout=2, interval=1)
    user = presence_db.create_user()
    emulator = presence_db.emulator()
    token = emulator.user_token(user)
    script = f"""
        import sys, time
        sys.path.insert(0, {str(SRC)!r})
        sys.path.insert(0, {str(Path(__file__).parent)!r})
        import respx
        from presence_sdk import PresenceClient, PresenceConfig
        from presence_sdk.testing import PostgRESTEmulator
        from e2e_support import sync_client
        emulator = PostgRESTEmulator({presence_db.dsn!r})
        with respx.mock(base_url=emulator.url) as router:
            router.route(path__startswith="/rest/v1/rpc/").mock(side_effect=emulator.handle)
            client = PresenceClient(sync_client(emulator, {token!r}),
                                    config=PresenceConfig(interval=0.3))
            client.start()
            while client.stats.beats_sent < 1:
                time.sleep(0.01)
            print("ONLINE", flush=True)
            time.sleep(60)
    """
    with subprocess.Popen(  # a separate process, so it can die without a leave
        [sys.executable, "-c", textwrap.dedent(script)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        env={**os.environ, "PYTHONWARNINGS": "error"},
    ) as proc:
        try:
            assert proc.stdout is not None
            assert proc.stdout.readline().strip() == "ONLINE"
            assert row(presence_db, user)["online"] is True
            proc.kill()  # SIGKILL: no stop(), no leave, no atexit
            proc.wait(10)
            killed_at = time.monotonic()
            assert presence_db.rpc("presence_is_online", {"user_id": user}, user_id=user)
            poll(lambda: not row(presence_db, user)["online"], timeout=5.0)
            assert time.monotonic() - killed_at <= 2.0 + 0.5
            after = row(presence_db, user)
            # Nothing swept this database: the stored status is stale, reads are exact.
            assert (after["stored_status"], after["status"]) == ("online", "offline")
        finally:
            proc.kill()
            emulator.close()


def test_expired_token_is_refreshed_through_supabase_auth(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    with routed(presence_db) as (emulator, router):
        short = emulator.user_token(user, expires_in=1.5)
        fresh = emulator.user_token(user, expires_in=3600)
        router.get("/auth/v1/user").respond(200, json=_user_json(user))
        refresh = router.post("/auth/v1/token").respond(200, json=_session_json(user, fresh))
        supabase = sync_client(emulator)
        supabase.auth.set_session(short, "refresh-1")
        config = dataclasses.replace(QUICK, interval=0.5)
        with PresenceClient(supabase, config=config) as presence:
            poll(lambda: presence.stats.beats_sent >= 1)
            # Within 1.5 s the emulator answers 401 PGRST301 "JWT expired": one refresh.
            poll(lambda: refresh.call_count == 1, timeout=4.0)
            sent = presence.stats.beats_sent
            poll(lambda: presence.stats.beats_sent > sent, timeout=3.0)
            assert presence.stats.beats_failed == 0
            assert presence.state is PresenceState.ONLINE
        assert row(presence_db, user)["online"] is False


def test_missing_sql_is_reported_as_not_installed(presence_db: PresenceDatabase) -> None:
    # Neither the sessions RPC nor the 0.1 one it falls back to.
    presence_db.query(
        "DROP FUNCTION public.presence_session_beat(uuid, text, text, jsonb), "
        "public.presence_heartbeat(text)"
    )
    user = presence_db.create_user()
    with routed(presence_db) as (emulator, _):
        presence = PresenceClient(sync_client(emulator, emulator.user_token(user)), config=QUICK)
        with presence:
            poll(lambda: presence.state is PresenceState.NOT_INSTALLED)
        error = presence.stats.last_error
        assert isinstance(error, NotInstalledError)
        assert error.code == "PGRST202"
        assert error.hint is not None
        assert "verify_setup" in error.hint


def test_anonymous_client_is_unauthenticated(presence_db: PresenceDatabase) -> None:
    with routed(presence_db) as (emulator, _):
        presence = PresenceClient(sync_client(emulator), config=QUICK)
        with presence:
            poll(lambda: presence.state is PresenceState.UNAUTHENTICATED)
        assert presence.stats.beats_sent == 0
        assert presence.stats.last_error is not None
        # anon may not even call the RPC (grants): PostgREST answers 401 42501
        assert (presence.stats.last_error.status, presence.stats.last_error.code) == (401, "42501")


def test_users_row_missing_is_a_failed_state(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    presence_db.query("DELETE FROM public.users WHERE id = %s", (user,))
    with routed(presence_db) as (emulator, _):
        presence = PresenceClient(sync_client(emulator, emulator.user_token(user)), config=QUICK)
        with presence:
            poll(lambda: presence.state is PresenceState.FAILED)
        assert presence.stats.last_error is not None
        assert presence.stats.last_error.code == "PT404"


def _user_json(user: str) -> dict[str, object]:
    return {
        "id": user,
        "aud": "authenticated",
        "role": "authenticated",
        "app_metadata": {},
        "user_metadata": {},
        "created_at": "2025-01-01T00:00:00Z",
    }


def _session_json(user: str, token: str) -> dict[str, object]:
    return {
        "access_token": token,
        "refresh_token": "refresh-2",
        "token_type": "bearer",
        "expires_in": 3600,
        "expires_at": int(time.time()) + 3600,
        "user": _user_json(user),
    }


def test_http_client_is_the_apps(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    seen: list[str] = []
    with routed(presence_db) as (emulator, _):
        http = httpx.Client(event_hooks={"request": [lambda r: seen.append(r.url.path)]})
        supabase = sync_client(emulator, emulator.user_token(user), http=http)
        assert PresenceClient(supabase, config=QUICK).beat() is not None
        http.close()
    assert seen == ["/rest/v1/rpc/presence_session_beat"]
