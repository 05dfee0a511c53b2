"""Every example in examples/ runs against the local PostgreSQL through real HTTP."""

from __future__ import annotations

import asyncio
import importlib.util
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import httpx
import pytest
from starlette.testclient import TestClient
from starlette.websockets import WebSocketDisconnect

from presence_sdk.testing import LocalPostgREST, PresenceDatabase

pytestmark = pytest.mark.integration

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.fixture
def api(presence_db: PresenceDatabase) -> Iterator[LocalPostgREST]:
    with LocalPostgREST(presence_db.emulator()) as server:
        yield server


def _env(api: LocalPostgREST, user: str, **extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "SUPABASE_URL": api.url,
        "SUPABASE_ANON_KEY": api.emulator.anon_key,
        "SUPABASE_SERVICE_ROLE_KEY": api.emulator.service_role_key,
        "SUPABASE_ACCESS_TOKEN": api.emulator.user_token(user),
        **extra,
    }


def _stored(db: PresenceDatabase, user: str) -> dict[str, object]:
    rows = db.query(
        "SELECT u.status AS stored, p.online, u.last_heartbeat FROM public.users u "
        "JOIN public.user_presence p ON p.user_id = u.id WHERE u.id = %s",
        (user,),
    )
    return rows[0]


@pytest.mark.parametrize(
    ("script", "expected"),
    [
        ("sync_script.py", "online now: 1 of 1 users"),
        ("asyncio_app.py", "online users on the first page: 1"),
    ],
)
def test_script_beats_then_leaves(
    presence_db: PresenceDatabase, api: LocalPostgREST, script: str, expected: str
) -> None:
    user = presence_db.create_user()
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        env=_env(api, user, WORK_SECONDS="0.3"),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert expected in result.stdout
    assert result.stdout.rstrip().endswith("left")
    state = _stored(presence_db, user)
    assert state["stored"] == "offline"
    assert state["last_heartbeat"] is not None


def test_worker_leaves_on_sigterm(presence_db: PresenceDatabase, api: LocalPostgREST) -> None:
    user = presence_db.create_user()
    proc = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "worker.py")],
        env=_env(api, user),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "worker: ready"
        _wait_online(presence_db, user)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err
    assert "worker: SIGTERM" in out  # the app's own handler still ran
    assert "presence state stopped" in out
    state = _stored(presence_db, user)
    assert state["stored"] == "offline"
    assert state["online"] is False


def _wait_online(db: PresenceDatabase, user: str) -> None:
    """The first heartbeat is sent right after start(); wait (bounded) for it."""
    deadline = time.monotonic() + 10
    while not _stored(db, user)["online"]:
        assert time.monotonic() < deadline, "the worker's first heartbeat never arrived"
        time.sleep(0.05)


def _load_fastapi_example(name: str = "fastapi_app") -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.asyncio
async def test_fastapi_app_verifies_setup_and_runs_presence(
    presence_cron_db: PresenceDatabase, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The cron database has the complete setup (pg_cron job included), so the
    # lifespan's verify_setup passes there. The app runs its real lifespan; requests
    # go through httpx's ASGI transport.
    user = presence_cron_db.create_user()
    other = presence_cron_db.create_user()
    try:
        with LocalPostgREST(presence_cron_db.emulator()) as server:
            for key, value in _env(server, user).items():
                if key.startswith("SUPABASE_"):
                    monkeypatch.setenv(key, value)
            app = _load_fastapi_example().app
            async with (
                app.router.lifespan_context(app),
                httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://app"
                ) as http,
            ):
                deadline = time.monotonic() + 10
                health = (await http.get("/health")).json()
                while health["beats_sent"] < 1:  # the first beat is on its way
                    assert time.monotonic() < deadline, health
                    await asyncio.sleep(0.05)
                    health = (await http.get("/health")).json()
                assert health["setup_ok"] is True
                assert health["presence_state"] == "online"
                me = (await http.get(f"/presence/{user}")).json()
                assert me["online"] is True
                assert me["status"] == "online"
                assert (await http.get(f"/presence/{other}")).json()["online"] is False
                assert (await http.get("/presence/not-a-uuid")).status_code == 422
                assert user in (await http.get("/online")).json()["users"]
            assert _stored(presence_cron_db, user)["stored"] == "offline"
    finally:
        presence_cron_db.query("DELETE FROM auth.users WHERE id IN (%s, %s)", (user, other))


def _sessions(db: PresenceDatabase, user: str) -> list[dict[str, object]]:
    return db.query(
        "SELECT session_id, status, device FROM public.presence_sessions WHERE user_id = %s",
        (user,),
    )


def test_fastapi_websocket_tracks_on_connect_and_untracks_on_disconnect(
    presence_db: PresenceDatabase, api: LocalPostgREST, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The app's real lifespan runs the tracker; TestClient speaks real websockets to the
    # app, the tracker speaks real HTTP to the PostgREST emulation on the real SQL.
    alice, bob = presence_db.create_user(), presence_db.create_user()
    monkeypatch.setenv("SUPABASE_URL", api.url)
    monkeypatch.setenv("SUPABASE_SERVICE_ROLE_KEY", api.emulator.service_role_key)
    monkeypatch.setenv("SUPABASE_JWT_SECRET", api.emulator.jwt_secret)
    app = _load_fastapi_example("fastapi_ws").app

    def token(user: str) -> str:
        return api.emulator.user_token(user)

    def until(predicate: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not predicate():
            assert time.monotonic() < deadline, "condition not met in time"
            time.sleep(0.02)

    with TestClient(app) as http:
        with (
            http.websocket_connect(f"/ws?token={token(alice)}") as tab1,
            http.websocket_connect(f"/ws?token={token(alice)}") as tab2,
            http.websocket_connect(f"/ws?token={token(bob)}") as phone,
        ):
            ids = {ws.receive_json()["session_id"] for ws in (tab1, tab2)}
            phone.receive_json()
            until(lambda: {str(s["session_id"]) for s in _sessions(presence_db, alice)} == ids)
            assert {s["device"] for s in _sessions(presence_db, alice)} == {"testclient"}
            until(lambda: bool(_stored(presence_db, bob)["online"]))
            phone.send_text("away")
            assert phone.receive_json() == {"status": "away"}
            until(lambda: _stored(presence_db, bob)["stored"] == "away")
            phone.send_text("invisible")
            assert "error" in phone.receive_json()

            tab1.close()  # one tab closes: alice stays online through the other
            until(lambda: len(_sessions(presence_db, alice)) == 1)
            assert _stored(presence_db, alice)["online"] is True
            health = http.get("/health").json()
            assert health["state"] == "online"
            assert health["connections"] == 2
        # The last tab closed: offline at once (the tracker ends the session promptly).
        until(lambda: _stored(presence_db, alice)["stored"] == "offline")
        assert _stored(presence_db, alice)["online"] is False

        with (
            pytest.raises(WebSocketDisconnect) as refused,
            http.websocket_connect("/ws?token=forged") as intruder,
        ):
            intruder.receive_json()
        assert refused.value.code == 1008

        with http.websocket_connect(f"/ws?token={token(bob)}") as again:
            again.receive_json()
            until(lambda: bool(_stored(presence_db, bob)["online"]))
    # The app shut down: the tracker ended every session still open.
    assert _stored(presence_db, bob)["stored"] == "offline"
    assert _sessions(presence_db, alice) == _sessions(presence_db, bob) == []


def test_demo_runs_end_to_end() -> None:
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "demo.py"), "--timeout", "4"],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "bob: presence online -> away (set_status)" in out
    assert "erin: presence online -> busy (set_status)" in out
    assert "carol: presence online -> offline (leave on stop())" in out
    assert "dave: presence online -> offline (timeout" in out
    assert "dave: stored status online -> offline (cron sweep" in out
    assert "presence setup: OK" in out
    assert "0 failed" in out
