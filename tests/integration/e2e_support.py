"""Helpers for the end-to-end client tests: supabase-py → respx → PostgREST emulation →
the real test PostgreSQL."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import httpx
import respx
from supabase import AsyncClient, AsyncClientOptions, Client, ClientOptions

from presence_sdk.testing import PostgRESTEmulator, PresenceDatabase


@contextmanager
def routed(db: PresenceDatabase) -> Iterator[tuple[PostgRESTEmulator, respx.MockRouter]]:
    """An emulator over ``db`` and a respx router sending every RPC to it."""
    emulator = db.emulator()
    try:
        with respx.mock(base_url=emulator.url, assert_all_called=False) as router:
            router.route(path__startswith="/rest/v1/rpc/", name="rpc").mock(
                side_effect=emulator.handle
            )
            yield emulator, router
    finally:
        emulator.close()


def sync_client(
    emulator: PostgRESTEmulator, token: str | None = None, http: httpx.Client | None = None
) -> Client:
    """A supabase ``Client`` for the emulator, as ``token``'s user (else anon)."""
    options = ClientOptions(httpx_client=http or httpx.Client(), auto_refresh_token=False)
    if token is not None:
        options.headers["Authorization"] = f"Bearer {token}"
    return Client(emulator.url, emulator.anon_key, options)


def async_client(
    emulator: PostgRESTEmulator, token: str | None = None, http: httpx.AsyncClient | None = None
) -> AsyncClient:
    """A supabase ``AsyncClient`` for the emulator, as ``token``'s user (else anon)."""
    options = AsyncClientOptions(httpx_client=http or httpx.AsyncClient(), auto_refresh_token=False)
    if token is not None:
        options.headers["Authorization"] = f"Bearer {token}"
    return AsyncClient(emulator.url, emulator.anon_key, options)


def row(db: PresenceDatabase, user_id: str) -> dict[str, Any]:
    """The user's stored row and derived presence, plus the server's clock."""
    rows = db.query(
        "SELECT u.status AS stored_status, u.last_heartbeat, p.status, p.online, now() AS now "
        "FROM public.users AS u JOIN public.user_presence AS p ON p.user_id = u.id "
        "WHERE u.id = %s",
        (user_id,),
    )
    return rows[0]


def poll(predicate: Callable[[], bool], timeout: float = 5.0) -> None:
    """Wait until ``predicate()`` (polling the database); fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


async def async_poll(predicate: Callable[[], bool], within: float = 5.0) -> None:
    """The asyncio twin of :func:`poll`."""
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        await asyncio.sleep(0.02)


def set_timings(db: PresenceDatabase, *, timeout: int, interval: int) -> None:
    """Shorten the presence timings of ``db`` for one test (the sweep period too, which
    may not exceed the timeout)."""
    db.query(
        "UPDATE public.presence_config SET timeout_seconds = %s, heartbeat_interval_seconds = %s, "
        "sweep_interval_seconds = least(sweep_interval_seconds, %s)",
        (timeout, interval, timeout),
    )


def create_users(db: PresenceDatabase, count: int, *, online: bool = False) -> list[str]:
    """``count`` users in one statement (the auth trigger creates their rows)."""
    rows = db.query(
        "INSERT INTO auth.users (id, email) SELECT id, id || '@example.test' "
        "FROM (SELECT gen_random_uuid() AS id FROM generate_series(1, %s)) AS g RETURNING id",
        (count,),
    )
    ids = [str(r["id"]) for r in rows]
    db.query(
        "INSERT INTO public.users (id) SELECT unnest(%s::uuid[]) ON CONFLICT (id) DO NOTHING",
        (ids,),
    )
    if online:
        db.query(
            "UPDATE public.users SET status = 'online', last_heartbeat = now(), "
            "online_since = now() WHERE id = ANY(%s::uuid[])",
            (ids,),
        )
    return ids
