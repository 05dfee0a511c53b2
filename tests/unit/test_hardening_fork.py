"""Defect 3: after ``os.fork()`` the child must not talk over the parent's connections.

0.1.0's child reused the parent's pooled keep-alive connection: both processes wrote
requests and read responses on one socket. Now a client built by ``from_url`` gets
new connections in the child, and one built on the app's supabase client refuses to
work there with a ConfigurationError that says what to do.

Each scenario runs in its own Python process (forking pytest itself would copy its
threads); the misbehaving server in the test process records which TCP connection
(peer address) every request came on. The parent beats with status ``online``, the
child with ``busy``. Children end with ``os._exit``; everything is bounded.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

from client_support import user_token
from misbehaving_server import MisbehavingServer

import presence_sdk

SRC = Path(presence_sdk.__file__).resolve().parents[1]  # the code under test

_HEADER = """
import asyncio, os, sys, traceback
import httpx
from supabase import Client, ClientOptions
from presence_sdk import AsyncPresenceClient, ConfigurationError, PresenceClient, PresenceConfig

URL, KEY, TOKEN = sys.argv[1], sys.argv[2], sys.argv[3]
CONFIG = PresenceConfig(interval=5.0, timeout=20.0, request_timeout=2.0, stop_timeout=1.0)

def child_then_parent(child, parent):
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            child()
            code = 0
        except BaseException:
            traceback.print_exc()
        finally:
            sys.stdout.flush()
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    print("CHILD EXIT", os.waitstatus_to_exitcode(status), flush=True)
    parent()
"""


def _run(server: MisbehavingServer, body: str) -> subprocess.CompletedProcess[str]:
    script = _HEADER + textwrap.dedent(body)
    env = {**os.environ, "PYTHONWARNINGS": "error", "PYTHONPATH": str(SRC)}
    return subprocess.run(
        [sys.executable, "-c", script, server.url, server.anon_key, user_token()],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
        check=False,
    )


def _peers(server: MisbehavingServer, status: str) -> set[tuple[str, int]]:
    return {
        seen.peer
        for seen in server.seen("presence_session_beat")
        if seen.body["new_status"] == status
    }


def _sessions(server: MisbehavingServer, status: str) -> set[str]:
    return {
        seen.body["session_id"]
        for seen in server.seen("presence_session_beat")
        if seen.body["new_status"] == status
    }


def test_sync_from_url_child_gets_connections_of_its_own(misbehaving: MisbehavingServer) -> None:
    result = _run(
        misbehaving,
        """
        presence = PresenceClient.from_url(URL, KEY, access_token=TOKEN, config=CONFIG)
        presence.beat()  # the parent's keep-alive connection is now pooled

        def child():
            presence.set_status("busy")
            for _ in range(3):
                print("CHILD BEAT", presence.beat() is not None, flush=True)

        def parent():
            for _ in range(2):
                print("PARENT BEAT", presence.beat() is not None, flush=True)
            presence.close()

        child_then_parent(child, parent)
        """,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == ["CHILD BEAT True"] * 3 + ["CHILD EXIT 0"] + ["PARENT BEAT True"] * 2
    parent, child = _peers(misbehaving, "online"), _peers(misbehaving, "busy")
    assert len(child) == 1
    assert parent.isdisjoint(child)  # never a connection of the parent's
    # ...nor the parent's presence session: the child is another connection.
    parent_sessions = _sessions(misbehaving, "online")
    child_sessions = _sessions(misbehaving, "busy")
    assert len(parent_sessions) == len(child_sessions) == 1
    assert parent_sessions.isdisjoint(child_sessions)


def test_async_from_url_child_gets_connections_of_its_own(
    misbehaving: MisbehavingServer,
) -> None:
    result = _run(
        misbehaving,
        """
        presence = AsyncPresenceClient.from_url(URL, KEY, access_token=TOKEN, config=CONFIG)
        loop = asyncio.new_event_loop()  # the parent's loop, idle during the fork
        loop.run_until_complete(presence.beat())  # a pooled connection in the parent

        async def beats(status, times, who):
            presence.set_status(status)
            for _ in range(times):
                print(who, "BEAT", (await presence.beat()) is not None, flush=True)

        def parent():
            loop.run_until_complete(beats("online", 2, "PARENT"))
            loop.run_until_complete(presence.close())
            loop.close()

        child_then_parent(lambda: asyncio.run(beats("busy", 3, "CHILD")), parent)
        """,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == ["CHILD BEAT True"] * 3 + ["CHILD EXIT 0"] + ["PARENT BEAT True"] * 2
    assert _peers(misbehaving, "online").isdisjoint(_peers(misbehaving, "busy"))


def test_app_supplied_client_is_refused_in_a_forked_child(misbehaving: MisbehavingServer) -> None:
    result = _run(
        misbehaving,
        """
        options = ClientOptions(httpx_client=httpx.Client(), auto_refresh_token=False)
        options.headers["Authorization"] = f"Bearer {TOKEN}"
        supabase = Client(URL, KEY, options)
        presence = PresenceClient(supabase, config=CONFIG)
        presence.beat()

        def child():
            presence.set_status("busy")
            for attempt in (presence.beat, presence.start, presence.counts):
                try:
                    attempt()
                except ConfigurationError as exc:
                    print("REFUSED", "build a new supabase client" in str(exc), flush=True)
                else:
                    print("ALLOWED", flush=True)

        def parent():
            print("PARENT BEAT", presence.beat() is not None, flush=True)
            supabase.postgrest.session.close()

        child_then_parent(child, parent)
        """,
    )
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines == ["REFUSED True"] * 3 + ["CHILD EXIT 0", "PARENT BEAT True"]
    assert _peers(misbehaving, "busy") == set()  # nothing left the child
