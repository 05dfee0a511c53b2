"""The public testing module: cluster lifecycle, PostgREST emulation, local HTTP API."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import psycopg
import pytest
import respx
from supabase import ClientOptions, create_client

from presence_sdk.testing import (
    ClusterError,
    LocalPostgREST,
    PostgresCluster,
    PostgRESTError,
    PresenceDatabase,
    PresenceTestServer,
    call_rpc,
)

pytestmark = pytest.mark.integration


def test_session_cluster_is_on_a_free_port_with_pg_cron(
    presence_server: PresenceTestServer,
) -> None:
    cluster = presence_server.cluster
    assert cluster.port not in (0, 5432)
    assert cluster.pg_cron_version is not None
    rows = presence_server.cron_database.query(
        "SELECT current_setting('shared_preload_libraries') AS libs, "
        "current_setting('cron.use_background_workers') AS bgw, "
        "(SELECT extversion FROM pg_extension WHERE extname = 'pg_cron') AS version"
    )
    assert rows == [{"libs": "pg_cron", "bgw": "on", "version": cluster.pg_cron_version}]


def test_cluster_stop_removes_everything() -> None:
    cluster = PostgresCluster(pg_cron=False).start()
    datadir = cluster.datadir
    assert datadir is not None
    assert datadir.is_dir()
    dsn = cluster.dsn()
    with psycopg.connect(dsn) as conn:
        assert conn.execute("SELECT 1").fetchone() == (1,)
    cluster.stop()
    assert not datadir.exists()
    assert not cluster.running
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(dsn, connect_timeout=2)
    cluster.stop()  # idempotent


def test_cluster_without_binaries_fails_loudly(tmp_path: Path) -> None:
    with pytest.raises(ClusterError, match="initdb"):
        PostgresCluster(bindir=tmp_path, pg_cron=False).start()


def test_fresh_database_per_test_is_isolated(presence_db: PresenceDatabase) -> None:
    assert presence_db.name.startswith("presence_test_")
    assert presence_db.query("SELECT count(*) AS n FROM public.users") == [{"n": 0}]
    presence_db.create_user()
    assert presence_db.query("SELECT count(*) AS n FROM public.users") == [{"n": 1}]


def test_call_rpc_switches_role_and_claims_in_one_transaction(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    with presence_db.connect() as conn:
        call_rpc(
            conn,
            "presence_heartbeat",
            {"new_status": "busy"},
            role="authenticated",
            claims={"sub": user},
        )
        # Role and claims were LOCAL to the request's transaction.
        assert conn.execute(
            "SELECT current_user, current_setting('request.jwt.claims', true)"
        ).fetchone() == ("postgres", "")
    assert presence_db.query("SELECT status FROM public.users WHERE id = %s", (user,)) == [
        {"status": "busy"}
    ]


def test_call_rpc_maps_errors_like_postgrest(presence_db: PresenceDatabase) -> None:
    with pytest.raises(PostgRESTError) as missing:
        presence_db.rpc("no_such_function", user_id=presence_db.create_user())
    assert (missing.value.status, missing.value.code) == (404, "PGRST202")

    with pytest.raises(PostgRESTError) as anon:
        presence_db.rpc("presence_heartbeat", {"new_status": "online"})
    assert (anon.value.status, anon.value.code) == (401, "42501")

    with pytest.raises(ValueError, match="role must be one of"):
        presence_db.rpc("presence_settings", role="postgres")


def test_emulator_serves_supabase_py_and_checks_jwts(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    emulator = presence_db.emulator()
    try:
        with respx.mock(base_url=emulator.url, assert_all_called=False) as router:
            router.route(path__startswith="/rest/v1/").mock(side_effect=emulator.handle)
            http = httpx.Client()
            client = create_client(
                emulator.url,
                emulator.anon_key,
                options=ClientOptions(
                    httpx_client=http,
                    headers={"Authorization": f"Bearer {emulator.user_token(user)}"},
                ),
            )
            beat = client.rpc("presence_heartbeat", {"new_status": "away"}).execute().data
            assert isinstance(beat, str)
            rows = client.rpc("presence_get", {"user_ids": [user]}).execute().data
            assert rows[0]["user_id"] == user
            assert rows[0]["status"] == "away"

            expired = httpx.post(
                f"{emulator.url}/rest/v1/rpc/presence_settings",
                headers={"Authorization": f"Bearer {emulator.user_token(user, expires_in=-1)}"},
                json={},
            )
            assert expired.status_code == 401
            assert expired.json()["code"] == "PGRST301"
            assert expired.json()["message"] == "JWT expired"

            forged = httpx.post(
                f"{emulator.url}/rest/v1/rpc/presence_settings",
                headers={"Authorization": "Bearer " + emulator.user_token(user)[:-4] + "AAAA"},
                json={},
            )
            assert forged.status_code == 401
            http.close()
    finally:
        emulator.close()


def test_local_postgrest_serves_real_http(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    with LocalPostgREST(presence_db.emulator()) as api, httpx.Client(base_url=api.url) as http:
        token = api.emulator.user_token(user)
        response = http.post(
            "/rest/v1/rpc/presence_heartbeat",
            headers={"apikey": api.emulator.anon_key, "Authorization": f"Bearer {token}"},
            json={"new_status": "online"},
        )
        assert response.status_code == 200, response.text
        bad = http.post(
            "/rest/v1/rpc/presence_heartbeat",
            headers={"Authorization": f"Bearer {token}"},
            content=b"not json",
        )
        assert bad.status_code == 400
        assert json.loads(bad.text)["code"] == "PGRST102"
