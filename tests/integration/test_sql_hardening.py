"""The attacks on the 0.1.0 SQL (issue 11), each now refused, on the real PostgreSQL.

Every call that a client makes goes through the PostgREST emulation (role switch +
``request.jwt.claims`` in one transaction). Each test here failed on 0.1.0's SQL.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from psycopg import sql
from sql_support import (
    HAND_MADE_USERS,
    denied,
    privileges_snapshot,
    rowcount,
)

from presence_sdk import migrations, schema_sql
from presence_sdk.testing import (
    PostgRESTError,
    PresenceDatabase,
    PresenceTestServer,
    apply_presence_sql,
    install_supabase_shim,
)

pytestmark = pytest.mark.integration

JOB = "mark-inactive-users"
FILES = {"schema.sql": schema_sql(), **{m.filename: m.up for m in migrations()}}
BY_NAME = {m.name: m for m in migrations()}
FIRST = BY_NAME["add_heartbeat"].up


@pytest.fixture
def empty_db(presence_server: PresenceTestServer) -> Iterator[PresenceDatabase]:
    """A database with only the Supabase shim (and Supabase's default privileges)."""
    with presence_server.database(template=None) as db, db.connect() as conn:
        install_supabase_shim(conn)
        yield db


def the_api_works(db: PresenceDatabase, user: str) -> None:
    """Every RPC a client uses answers, as anon and as a signed-in user."""
    assert db.rpc("presence_settings")["timeout_seconds"] == 45
    assert db.rpc("presence_settings", user_id=user)["timeout_seconds"] == 45
    db.rpc("presence_heartbeat", {"new_status": "online"}, user_id=user)
    assert db.rpc("presence_is_online", {"user_id": user}, user_id=user) is True
    assert [p["user_id"] for p in db.rpc("presence_list_online", user_id=user)] == [user]
    assert db.rpc("presence_get", {"user_ids": [user]}, user_id=user)[0]["online"] is True
    assert db.rpc("presence_counts", user_id=user)["online"] == 1
    db.rpc("presence_leave", user_id=user)
    assert db.rpc("presence_is_online", {"user_id": user}, user_id=user) is False


# -- defect 1: every file can be re-run on its own ------------------------------------


def rerun_from(name: str) -> list[str]:
    """``name``, then every file after it (their redefinitions stand on its objects)."""
    names = list(FILES)
    return names[names.index(name) :]


# Re-running a file also re-runs the files after it: migration 20240000000007_privacy
# replaces reads that earlier files define and narrows the SELECT grants schema.sql
# gives, so an earlier file re-run alone reverts them (docs/migrations.md).
@pytest.mark.parametrize(
    "order",
    [
        *(rerun_from(name) for name in FILES),
        [*reversed(FILES), *list(FILES)[1:]],
        [
            BY_NAME["add_heartbeat"].filename,
            BY_NAME["setup_report"].filename,
            *rerun_from(BY_NAME["presence_api"].filename),
        ],
    ],
    ids=lambda order: "+".join(name.split("_", 1)[0] for name in order),
)
def test_rerunning_any_file_alone_keeps_every_grant_and_every_read(
    empty_db: PresenceDatabase, order: list[str]
) -> None:
    with empty_db.connect() as conn:
        apply_presence_sql(conn)
        applied = privileges_snapshot(conn)
        for name in order:
            conn.execute(FILES[name])
        assert privileges_snapshot(conn) == applied
    the_api_works(empty_db, empty_db.create_user())


# -- defect 2: clients cannot write presence columns, however the table was made ------


@pytest.fixture
def hand_made_db(empty_db: PresenceDatabase) -> PresenceDatabase:
    """A users table made in the SQL editor (API roles get ALL), then the migrations."""
    with empty_db.connect() as conn:
        conn.execute(HAND_MADE_USERS)
        apply_presence_sql(conn, schema=False)
    return empty_db


def add_user(db: PresenceDatabase) -> str:
    user = str(uuid.uuid4())
    db.query("INSERT INTO public.users (id) VALUES (%s)", (user,))
    return user


@pytest.mark.parametrize(
    "statement",
    [
        "UPDATE public.users SET status = 'online', last_heartbeat = 'infinity' WHERE id = %(me)s",
        "UPDATE public.users SET last_heartbeat = now() WHERE id = %(me)s",
        "UPDATE public.users SET status = 'busy' WHERE id = %(me)s",
        "UPDATE public.users SET online_since = now() WHERE id = %(me)s",
        "INSERT INTO public.users (id, last_heartbeat) VALUES (gen_random_uuid(), 'infinity')",
        "INSERT INTO public.users (id) VALUES (%(me)s) "
        "ON CONFLICT (id) DO UPDATE SET last_heartbeat = 'infinity'",
    ],
)
def test_a_hand_made_users_table_does_not_let_users_forge_presence(
    hand_made_db: PresenceDatabase, statement: str
) -> None:
    me = add_user(hand_made_db)
    before = hand_made_db.query("SELECT * FROM public.users ORDER BY id")
    assert "permission denied for table users" in denied(
        hand_made_db, "authenticated", me, statement
    )
    assert "permission denied for table users" in denied(hand_made_db, "anon", None, statement)
    assert hand_made_db.query("SELECT * FROM public.users ORDER BY id") == before


def test_a_hand_made_users_table_keeps_the_apps_own_writes(
    hand_made_db: PresenceDatabase,
) -> None:
    me = add_user(hand_made_db)
    other = add_user(hand_made_db)
    update = "UPDATE public.users SET nickname = 'x' WHERE id = "
    assert rowcount(hand_made_db, "authenticated", me, update + "%(me)s") == 1
    assert rowcount(hand_made_db, "authenticated", me, f"{update}'{other}'") == 0  # RLS
    # Profile rows the app inserts itself (status included: without a heartbeat it
    # reads offline).
    newcomer = str(uuid.uuid4())
    insert = "INSERT INTO public.users (id, nickname, status) VALUES (%(me)s, 'new', 'online')"
    assert rowcount(hand_made_db, "authenticated", newcomer, insert) == 1
    # Presence goes through the functions, and reads work.
    the_api_works(hand_made_db, me)


def test_narrowing_client_grants_is_idempotent_and_reported(
    hand_made_db: PresenceDatabase,
) -> None:
    with hand_made_db.connect() as conn:
        narrowed = privileges_snapshot(conn)
        conn.execute(FIRST)
        assert privileges_snapshot(conn) == narrowed
    grants = {
        (r["grantee"], r["privilege_type"], r["column_name"])
        for r in hand_made_db.query(
            "SELECT grantee, privilege_type, column_name "
            "FROM information_schema.column_privileges "
            "WHERE table_name = 'users' AND grantee = 'authenticated' "
            "AND privilege_type IN ('INSERT', 'UPDATE')"
        )
    }
    assert grants == {
        ("authenticated", "UPDATE", "id"),
        ("authenticated", "UPDATE", "nickname"),
        ("authenticated", "INSERT", "id"),
        ("authenticated", "INSERT", "nickname"),
        ("authenticated", "INSERT", "status"),
    }


# -- defect 3: the app's own status values are refused, never rewritten --------------


def make_app_table(conn: psycopg.Connection[Any], values: list[str | None]) -> None:
    conn.execute("CREATE TABLE public.users (id uuid PRIMARY KEY, status text)")
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO public.users (id, status) VALUES (gen_random_uuid(), %s)",
            [(v,) for v in values],
        )


def test_the_apps_own_status_values_are_refused_and_nothing_changes(
    empty_db: PresenceDatabase,
) -> None:
    values = ["active"] * 3 + ["banned"] + ["pending"] * 2 + ["online", "offline", None]
    with empty_db.connect() as conn:
        make_app_table(conn, values)
        before = privileges_snapshot(conn)
        rows = conn.execute("SELECT id, status FROM public.users ORDER BY id").fetchall()
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as raised:
            conn.execute(FIRST)
        diag = raised.value.diag
        assert diag.message_primary == (
            "presence: public.users.status holds values that are not presence statuses: "
            "'active' (3 rows), 'pending' (2 rows), 'banned' (1 row); nothing was changed"
        )
        assert "sweep would overwrite these values" in (diag.message_detail or "")
        hint = diag.message_hint or ""
        assert "ALTER TABLE public.users RENAME COLUMN status TO account_status;" in hint
        assert "UPDATE public.users SET status = 'offline' WHERE status NOT IN" in hint
        assert privileges_snapshot(conn) == before
        assert conn.execute("SELECT id, status FROM public.users ORDER BY id").fetchall() == rows

        # The hint's first way out: keep the values in a column of the app's own.
        conn.execute("ALTER TABLE public.users RENAME COLUMN status TO account_status")
        apply_presence_sql(conn, schema=False)
        kept = conn.execute("SELECT id, account_status FROM public.users ORDER BY id").fetchall()
        assert kept == rows
        assert conn.execute("SELECT DISTINCT status FROM public.users").fetchall() == [("offline",)]
        user = str(rows[0][0])
    empty_db.rpc("presence_heartbeat", {"new_status": "away"}, user_id=user)
    assert empty_db.rpc("presence_get", {"user_ids": [user]}, user_id=user)[0]["status"] == "away"

    # The rollback drops the status column it added, and only that.
    with empty_db.connect() as conn:
        for migration in reversed(migrations()):
            conn.execute(migration.down)
        columns = conn.execute(
            "SELECT attname FROM pg_attribute WHERE attrelid = 'public.users'::regclass "
            "AND attnum > 0 AND NOT attisdropped ORDER BY attnum"
        ).fetchall()
        assert columns == [("id",), ("account_status",)]
        assert conn.execute(
            "SELECT id, account_status FROM public.users ORDER BY id"
        ).fetchall() == (rows)


def test_many_app_values_are_listed_bounded_and_truncated(empty_db: PresenceDatabase) -> None:
    values = ["a" * 5000] + [f"state-{i:02}" for i in range(14)]
    with empty_db.connect() as conn:
        make_app_table(conn, values)
        with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState) as raised:
            conn.execute(FIRST)
    message = raised.value.diag.message_primary or ""
    assert message.count("(1 row)") == 10
    assert "and 5 more distinct values" in message
    assert len(message) < 1000, message
    assert f"'{'a' * 64}'... (5000 characters) (1 row)" in message


def test_null_statuses_are_kept_and_read_as_offline(empty_db: PresenceDatabase) -> None:
    """A nullable app status: NULL means "no presence yet" (offline); never rewritten."""
    with empty_db.connect() as conn:
        make_app_table(conn, [None, None, "online"])
        apply_presence_sql(conn, schema=False)
        assert conn.execute("SELECT public.mark_inactive_users_offline()").fetchone() == (1,)
        assert conn.execute(
            "SELECT count(*) FILTER (WHERE status IS NULL), count(*) FROM public.users"
        ).fetchone() == (2, 3)
        nobody = conn.execute("SELECT id::text FROM public.users WHERE status IS NULL").fetchone()
    assert nobody is not None
    user = nobody[0]
    assert empty_db.rpc("presence_counts", user_id=user) == {
        "online": 0,
        "away": 0,
        "busy": 0,
        "offline": 3,
        "offline_estimated": False,
    }
    assert empty_db.rpc("presence_get", {"user_ids": [user]}, user_id=user)[0]["status"] == (
        "offline"
    )
    empty_db.rpc("presence_heartbeat", {"new_status": "busy"}, user_id=user)
    assert empty_db.rpc("presence_is_online", {"user_id": user}, user_id=user) is True


# -- defect 5 and the range item: timings are checked, with clear errors --------------


def settings(db: PresenceDatabase) -> dict[str, Any]:
    return db.query(
        "SELECT timeout_seconds, sweep_interval_seconds, heartbeat_interval_seconds "
        "FROM public.presence_config"
    )[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            {"timeout_seconds": 45, "sweep_interval_seconds": 50},
            "presence: the sweep period (50 s) must not be longer than the timeout (45 s)",
        ),
        (
            {"timeout_seconds": 30, "sweep_interval_seconds": 40},
            "presence: the sweep period (40 s) must not be longer than the timeout (30 s)",
        ),
        (
            {"timeout_seconds": 10},
            "presence: the sweep period (20 s) must not be longer than the timeout (10 s)",
        ),
        (
            {"heartbeat_interval_seconds": 1073741824},
            "presence: heartbeat_interval_seconds must be between 1 and 43200 (got 1073741824)",
        ),
        (
            {"heartbeat_interval_seconds": 30},
            "presence: the timeout (45 s) must cover at least two heartbeat intervals (30 s each)",
        ),
        ({"timeout_seconds": 0}, "presence: timeout_seconds must be between 2 and 86400 (got 0)"),
        (
            {"timeout_seconds": 2147483647},
            "presence: timeout_seconds must be between 2 and 86400 (got 2147483647)",
        ),
        (
            {"sweep_interval_seconds": -1},
            "presence: sweep_interval_seconds must be between 1 and 59 (got -1)",
        ),
    ],
)
def test_configure_refuses_inconsistent_timings_clearly(
    presence_db: PresenceDatabase, args: dict[str, int], message: str
) -> None:
    before = settings(presence_db)
    call = ", ".join(f"{name} => %({name})s::integer" for name in args)
    with pytest.raises(psycopg.errors.InvalidParameterValue) as raised:
        presence_db.query(f"SELECT public.presence_configure({call})", args)
    assert raised.value.diag.message_primary == message
    assert settings(presence_db) == before


def test_the_config_table_checks_agree_with_configure(presence_db: PresenceDatabase) -> None:
    for assignment in (
        "sweep_interval_seconds = 50, timeout_seconds = 45",
        "heartbeat_interval_seconds = 1073741824",
        "timeout_seconds = 100000",
    ):
        with pytest.raises(psycopg.errors.CheckViolation):
            presence_db.query(f"UPDATE public.presence_config SET {assignment}")
    ok = presence_db.query(
        "SELECT public.presence_configure(timeout_seconds => 30, sweep_interval_seconds => 30, "
        "heartbeat_interval_seconds => 15) AS s"
    )[0]["s"]
    assert (ok["timeout_seconds"], ok["sweep_interval_seconds"]) == (30, 30)


def test_rerunning_migration_1_on_old_inconsistent_timings_says_how_to_fix_them(
    presence_db: PresenceDatabase,
) -> None:
    """0.1.0 accepted a sweep longer than the timeout; the upgrade names the repair."""
    presence_db.query(
        "ALTER TABLE public.presence_config DROP CONSTRAINT presence_config_sweep_within_timeout"
    )
    presence_db.query("UPDATE public.presence_config SET sweep_interval_seconds = 50")
    with pytest.raises(psycopg.errors.CheckViolation) as raised:
        presence_db.query(FIRST)
    diag = raised.value.diag
    assert "presence_config_sweep_within_timeout" in (diag.message_primary or "")
    repair = (diag.message_hint or "").split("e.g. ", 1)[1].split("; then", 1)[0]
    assert repair == (
        "UPDATE public.presence_config "
        "SET sweep_interval_seconds = least(sweep_interval_seconds, timeout_seconds)"
    )
    presence_db.query(repair)
    presence_db.query(FIRST)
    assert settings(presence_db)["sweep_interval_seconds"] == 45


# -- defect 7: echoed input is cut --------------------------------------------------


def test_a_huge_bad_status_is_not_echoed_into_the_error_or_the_log(
    presence_server: PresenceTestServer, presence_db: PresenceDatabase
) -> None:
    user = presence_db.create_user()
    log_before = len(presence_server.cluster.server_log())
    with pytest.raises(PostgRESTError) as raised:
        presence_db.rpc("presence_heartbeat", {"new_status": "x" * 5_000_000}, user_id=user)
    err = raised.value
    assert (err.status, err.code) == (400, "22023")
    assert err.message == f"presence: invalid status '{'x' * 64}'... (5000000 characters)"
    grown = len(presence_server.cluster.server_log()) - log_before
    assert 0 < grown < 10_000, grown
    # Short values are still quoted whole.
    with pytest.raises(PostgRESTError) as short:
        presence_db.rpc("presence_heartbeat", {"new_status": "ONLINE"}, user_id=user)
    assert short.value.message == "presence: invalid status 'ONLINE'"


# -- defect 8: the sweep keeps its run history bounded --------------------------------


@contextmanager
def rolled_back(db: PresenceDatabase) -> Iterator[psycopg.Connection[Any]]:
    """A transaction on the cron database that is always rolled back (the real job
    keeps running undisturbed: it never sees these rows)."""
    with psycopg.connect(db.dsn, autocommit=False) as conn:
        try:
            yield conn
        finally:
            conn.rollback()


def add_runs(conn: psycopg.Connection[Any], jobid: int, count: int, age: str) -> None:
    conn.execute(
        "INSERT INTO cron.job_run_details (jobid, job_pid, database, username, command, "
        "status, return_message, start_time, end_time) "
        "SELECT %s, 0, current_database(), current_user, 'SELECT 1', 'succeeded', '1 row', "
        "now() - %s::interval, now() - %s::interval FROM generate_series(1, %s)",
        (jobid, age, age, count),
    )


def runs(conn: psycopg.Connection[Any], jobid: int, *, old: bool) -> int:
    row = conn.execute(
        "SELECT count(*) FROM cron.job_run_details WHERE jobid = %s "
        "AND (start_time < now() - interval '1 day') = %s",
        (jobid, old),
    ).fetchone()
    assert row is not None
    return int(row[0])


def test_prune_deletes_only_the_sweeps_old_runs_in_bounded_batches(
    presence_cron_db: PresenceDatabase,
) -> None:
    with rolled_back(presence_cron_db) as conn:
        row = conn.execute("SELECT jobid FROM cron.job WHERE jobname = %s", (JOB,)).fetchone()
        assert row is not None
        jobid, other = int(row[0]), 987654321
        add_runs(conn, jobid, 1500, "2 days")
        add_runs(conn, jobid, 10, "1 hour")
        add_runs(conn, other, 5, "3 days")
        recent = runs(conn, jobid, old=False)
        prune = "SELECT public.presence_prune_job_history(%s)"
        assert conn.execute(prune, (1000,)).fetchone() == (1000,)
        assert conn.execute("SELECT public.presence_prune_job_history()").fetchone() == (500,)
        assert conn.execute("SELECT public.presence_prune_job_history()").fetchone() == (0,)
        assert runs(conn, jobid, old=True) == 0
        assert runs(conn, jobid, old=False) == recent >= 10
        assert runs(conn, other, old=True) == 5  # other jobs' history is theirs

        # The sweep prunes on every run (pg_cron runs exactly this command).
        add_runs(conn, jobid, 3, "25 hours")
        conn.execute("SELECT public.mark_inactive_users_offline()")
        assert runs(conn, jobid, old=True) == 0


def test_prune_without_pg_cron_and_bad_batch_sizes(presence_db: PresenceDatabase) -> None:
    assert presence_db.query("SELECT to_regclass('cron.job_run_details') AS t") == [{"t": None}]
    assert presence_db.query("SELECT public.presence_prune_job_history() AS n") == [{"n": 0}]
    user = presence_db.create_user(status="online", last_heartbeat="2000-01-01T00:00:00Z")
    assert presence_db.query("SELECT public.mark_inactive_users_offline() AS n") == [{"n": 1}]
    assert presence_db.rpc("presence_is_online", {"user_id": user}, user_id=user) is False
    for bad in (0, None, 1_000_001):
        with pytest.raises(psycopg.errors.InvalidParameterValue, match="max_rows must be"):
            presence_db.query("SELECT public.presence_prune_job_history(%s::integer)", (bad,))


def test_a_failing_prune_never_fails_the_sweep(presence_db: PresenceDatabase) -> None:
    presence_db.query("DROP FUNCTION public.presence_prune_job_history(integer)")
    presence_db.create_user(status="online", last_heartbeat="2000-01-01T00:00:00Z")
    assert presence_db.query("SELECT public.mark_inactive_users_offline() AS n") == [{"n": 1}]


@pytest.mark.parametrize(
    ("prune", "what"),
    [
        ("presence_prune_job_history", "cron.job_run_details"),
        ("presence_prune_events", "public.presence_events"),  # migration 6's retention
    ],
)
def test_a_prune_that_raises_never_fails_the_sweep(
    presence_db: PresenceDatabase, prune: str, what: str
) -> None:
    presence_db.query(
        f"CREATE OR REPLACE FUNCTION public.{prune}(max_rows integer DEFAULT 1) RETURNS integer "
        "LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'disk on fire'; END $$"
    )
    user = presence_db.create_user()
    session = str(uuid.uuid4())
    presence_db.rpc("presence_session_beat", {"session_id": session}, user_id=user)
    presence_db.query(
        "UPDATE public.presence_sessions SET last_beat = now() - interval '1 hour', "
        "started_at = now() - interval '2 hours'"
    )
    warnings: list[str] = []
    with presence_db.connect() as conn:
        conn.add_notice_handler(lambda diag: warnings.append(diag.message_primary or ""))
        swept = conn.execute("SELECT public.mark_inactive_users_offline()").fetchone()
    assert swept == (1,)  # the session ended and the user went offline all the same
    assert warnings == [f"presence: could not prune {what}: disk on fire"]
    assert presence_db.rpc("presence_is_online", {"user_id": user}, user_id=user) is False
    assert presence_db.query("SELECT count(*) AS n FROM public.presence_sessions") == [{"n": 0}]


@pytest.mark.parametrize(
    ("rpc", "params", "role"),
    [
        ("presence_heartbeat", {}, "authenticated"),
        ("presence_session_beat", {"session_id": "6a1f2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b"},
         "authenticated"),
        ("presence_leave", {}, "authenticated"),
        ("presence_is_online", {"user_id": None}, "authenticated"),
        ("presence_track_beat", {"sessions": [
            {"session_id": "6a1f2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b", "user_id": None}]},
         "service_role"),
    ],
)  # fmt: skip
def test_a_missing_config_row_is_named_as_such_by_every_rpc(
    presence_db: PresenceDatabase, rpc: str, params: dict[str, Any], role: str
) -> None:
    """Migration 5 redefines the beats and reads: each keeps 02/04's message and repair
    (reads too: a user online through a session must not silently read offline)."""
    user = presence_db.create_user()
    presence_db.rpc("presence_session_beat", {"session_id": str(uuid.uuid4())}, user_id=user)
    filled = json.loads(json.dumps(params).replace("null", json.dumps(user)))
    presence_db.query("DELETE FROM public.presence_config")
    with pytest.raises(PostgRESTError) as raised:
        presence_db.rpc(rpc, filled, user_id=user, role=role)
    err = raised.value
    assert (err.status, err.code) == (500, "55000"), err
    assert "public.presence_config row is missing" in err.message
    assert err.hint is not None
    assert "restore the default timings: INSERT INTO public.presence_config" in err.hint


# -- small items --------------------------------------------------------------------


def test_a_beat_exactly_timeout_old_is_offline_in_reads_and_in_the_sweep(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    with presence_db.connect() as conn, conn.transaction():  # now() is fixed inside
        for age, online in (("45 seconds", False), ("44.999999 seconds", True)):
            conn.execute(
                "UPDATE public.users SET status = 'online', last_heartbeat = now() - %s::interval "
                "WHERE id = %s",
                (age, user),
            )
            read = conn.execute(
                "SELECT online FROM public.user_presence WHERE user_id = %s", (user,)
            ).fetchone()
            swept = conn.execute("SELECT public.mark_inactive_users_offline()").fetchone()
            assert (read, swept) == ((online,), (0 if online else 1,)), age


def test_a_missing_config_row_is_named_as_such(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    presence_db.query("DELETE FROM public.presence_config")
    with pytest.raises(PostgRESTError) as raised:
        presence_db.rpc("presence_heartbeat", user_id=user)
    err = raised.value
    assert (err.status, err.code) == (500, "55000")
    assert "presence_config row is missing" in err.message
    assert err.hint is not None
    restore = err.hint.split("restore the default timings: ", 1)[1].split("; then", 1)[0]
    with pytest.raises(psycopg.errors.ObjectNotInPrerequisiteState, match="row is missing"):
        presence_db.query("SELECT public.presence_configure(timeout_seconds => 60)")
    presence_db.query(restore)
    assert presence_db.rpc("presence_heartbeat", user_id=user) is not None
    # A user without a row still gets the 404 that says so.
    with pytest.raises(PostgRESTError) as ghost:
        presence_db.rpc("presence_heartbeat", user_id=str(uuid.uuid4()))
    assert ghost.value.code == "PT404"


#: Every RPC that beats, as (role, statement): the 0.1.0 heartbeat, the per-session
#: beat (migration 5) and the service-role batch.
BEATS = {
    "presence_heartbeat": ("authenticated", "SELECT public.presence_heartbeat('online')"),
    "presence_session_beat": (
        "authenticated",
        "SELECT public.presence_session_beat('6a1f2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b')",
    ),
    "presence_track_beat": (
        "service_role",
        "SELECT public.presence_track_beat(jsonb_build_array(jsonb_build_object("
        "'session_id', '6a1f2b3c-4d5e-4f60-8a7b-9c0d1e2f3a4b', 'user_id', %(user)s::text)))",
    ),
}


def synchronous_commit_after_a_beat(
    db: PresenceDatabase, user: str, *, write_first: bool, rpc: str = "presence_heartbeat"
) -> str:
    """PostgREST's transaction shape, optionally after a write of the caller's own."""
    role, statement = BEATS[rpc]
    claims = {"role": role} | ({"sub": user} if role == "authenticated" else {})
    with db.connect() as conn, conn.transaction():
        # What the caller asked for (the test cluster itself runs with it off).
        conn.execute("SET LOCAL synchronous_commit = on")
        if write_first:
            conn.execute("INSERT INTO public.presence_test_log VALUES ('important')")
        conn.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        conn.execute("SELECT set_config('request.jwt.claims', %s, true)", (json.dumps(claims),))
        conn.execute(statement, {"user": user} if "%(user)s" in statement else None)
        row = conn.execute("SHOW synchronous_commit").fetchone()
    assert row is not None
    return str(row[0])


@pytest.mark.parametrize("rpc", BEATS)
def test_async_commit_is_taken_only_when_the_beat_is_the_first_write(
    presence_db: PresenceDatabase, rpc: str
) -> None:
    presence_db.query("CREATE TABLE public.presence_test_log (note text)")
    user = presence_db.create_user()
    assert synchronous_commit_after_a_beat(presence_db, user, write_first=False, rpc=rpc) == "off"
    assert synchronous_commit_after_a_beat(presence_db, user, write_first=True, rpc=rpc) == "on"
    assert presence_db.query("SELECT note FROM public.presence_test_log") == [{"note": "important"}]
