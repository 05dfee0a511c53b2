"""verify_setup() findings about sessions and the event log, on the real PostgreSQL.

As in test_verify_hardening.py: each test breaks one thing, shows that it really breaks
presence (or its security), checks that exactly that finding appears, runs every
statement of its fix and checks that the setup is clean and works again. Clones of the
template have no pg_cron (``pg_cron`` is their one expected problem).
"""

from __future__ import annotations

import pytest
from events_support import events, shape
from sessions_support import beat, expect_error, leave, new_id, sessions_of
from sql_support import apply_fix, denied, session

from presence_sdk import migrate, migrations
from presence_sdk._models import SetupCheck, SetupReport
from presence_sdk._verify_facts import expected_setup
from presence_sdk._verify_io import verify_setup
from presence_sdk.testing import PresenceDatabase

pytestmark = pytest.mark.integration

BY_NAME = {m.name: m for m in migrations()}


def verify(db: PresenceDatabase) -> SetupReport:
    return verify_setup(dsn=db.dsn, raise_on_error=False)


def clone_problems(report: SetupReport) -> list[str]:
    """Failed checks, leaving out pg_cron (it only runs in `postgres`)."""
    return [c.name for c in report.problems if c.name != "pg_cron"]


def finding(db: PresenceDatabase, name: str) -> SetupCheck:
    """The one problem of ``db`` (besides pg_cron), which must be ``name``."""
    report = verify(db)
    assert clone_problems(report) == [name], str(report)
    return next(c for c in report.problems if c.name == name)


def fixed(db: PresenceDatabase, check: SetupCheck) -> None:
    """Run the fix; the setup is clean again."""
    apply_fix(db, check.fix)
    report = verify(db)
    assert clone_problems(report) == [], str(report)


def sessions_work(db: PresenceDatabase, user: str) -> None:
    """A device comes and goes, and the log says so."""
    device = new_id()
    beat(db, user, device)
    assert db.rpc("presence_is_online", {"user_id": user}, user_id=user) is True
    leave(db, user, device)
    assert shape(events(db, user))[-2:] == [
        ("session_end", device, "leave"),
        ("offline", None, "leave"),
    ]


# -- an older version: no sessions, no event log ------------------------------------------


def test_a_database_from_before_sessions_and_events_is_told_to_migrate(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    with presence_db.connect() as conn:
        # Rollbacks go newest first (privacy's reads stand on the sessions' views).
        for name in ("privacy", "events", "sessions"):
            conn.execute(BY_NAME[name].down)
    assert expect_error(presence_db, "presence_session_beat", {"session_id": new_id()},
                        user_id=user).code == "PGRST202"  # fmt: skip
    report = verify(presence_db)
    assert clone_problems(report) == [
        "schema.version",
        "schema.sessions",
        "schema.events",
        "schema.privacy",
    ]
    assert report.schema_version == 3
    older = ("schema.sessions", "schema.events", "schema.privacy")
    for check in [c for c in report.problems if c.name in older]:
        assert check.fix.startswith("older version of the presence SQL: apply the newer")
        assert "presence-sdk migrate" in check.fix
    # The fix as written: the template was set up without records, so migrate applies
    # every (idempotent) file again, the two rolled back among them.
    assert migrate(presence_db.dsn).applied == tuple(m.version for m in migrations())
    report = verify(presence_db)
    assert clone_problems(report) == [], str(report)
    assert report.schema_version == expected_setup().schema_version
    sessions_work(presence_db, user)


def test_a_dropped_event_log_is_named_and_re_running_its_file_restores_it(
    presence_db: PresenceDatabase,
) -> None:
    user = presence_db.create_user()
    presence_db.query("DROP TABLE public.presence_events CASCADE")
    # Its triggers now fail: a new session cannot even start.
    assert expect_error(presence_db, "presence_session_beat", {"session_id": new_id()},
                        user_id=user).code == "42P01"  # fmt: skip
    check = finding(presence_db, "schema.events")
    assert "public.presence_events is missing" in check.detail
    assert check.fix == (
        "re-run the migrations by hand, in order (idempotent): "
        "`presence-sdk sql --file events | psql <DATABASE_URL>`, "
        "then `presence-sdk sql --file privacy | psql <DATABASE_URL>`"
    )
    with presence_db.connect() as conn:  # what those commands pipe into psql
        conn.execute(BY_NAME["events"].up)
        conn.execute(BY_NAME["privacy"].up)
    assert clone_problems(verify(presence_db)) == []
    sessions_work(presence_db, user)


# -- the batch RPCs belong to the service role ----------------------------------------


@pytest.mark.parametrize(
    ("function", "call"),
    [
        ("presence_track_beat(jsonb)", "presence_track_beat"),
        ("presence_track_end(uuid[])", "presence_track_end"),
    ],
)
def test_batch_rpcs_granted_to_signed_in_users(
    presence_db: PresenceDatabase, function: str, call: str
) -> None:
    victim, attacker = presence_db.create_user(), presence_db.create_user()
    device = new_id()
    beat(presence_db, victim, device)
    presence_db.query(f"GRANT EXECUTE ON FUNCTION public.{function} TO authenticated")
    # It really lets any signed-in user speak for anyone.
    params = (
        {"sessions": [{"session_id": device, "user_id": victim, "status": "busy"}]}
        if call == "presence_track_beat"
        else {"session_ids": [device]}
    )
    presence_db.rpc(call, params, user_id=attacker)
    assert [s["status"] for s in sessions_of(presence_db, victim)] != ["online"]
    check = finding(presence_db, f"security.{call}")
    assert "executable by authenticated" in check.detail
    assert "beat or end the sessions of any user" in check.detail
    fixed(presence_db, check)
    assert expect_error(presence_db, call, params, user_id=attacker).code == "42501"


def test_batch_rpcs_revoked_from_the_service_role(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    presence_db.query(
        "REVOKE EXECUTE ON FUNCTION public.presence_track_beat(jsonb) FROM service_role"
    )
    entry = {"session_id": new_id(), "user_id": user}
    assert expect_error(presence_db, "presence_track_beat", {"sessions": [entry]},
                        role="service_role").code == "42501"  # fmt: skip
    check = finding(presence_db, "security.presence_track_beat")
    assert "the trackers' batches fail with permission denied" in check.detail
    assert check.fix == (
        "GRANT EXECUTE ON FUNCTION public.presence_track_beat(jsonb) TO service_role;"
    )
    fixed(presence_db, check)
    presence_db.rpc("presence_track_beat", {"sessions": [entry]}, role="service_role")
    assert presence_db.rpc("presence_is_online", {"user_id": user}, user_id=user) is True


# -- row level security off on sessions or the log ------------------------------------

#: Another user's session events (devices): never visible to a signed-in user.
SESSION_EVENTS = "SELECT count(*) FROM public.presence_events WHERE session_id IS NOT NULL"


@pytest.mark.parametrize(
    ("table", "read"),
    [
        ("presence_sessions", "SELECT count(*) FROM public.presence_sessions"),
        ("presence_events", SESSION_EVENTS),
    ],
)
def test_row_level_security_off_on_sessions_or_the_log(
    presence_db: PresenceDatabase, table: str, read: str
) -> None:
    owner, other = presence_db.create_user(), presence_db.create_user()
    beat(presence_db, owner, new_id(), device="phone")

    def others_can_see() -> int:
        with session(presence_db, "authenticated", other) as conn:
            row = conn.execute(read).fetchone()
        assert row is not None
        return int(row[0])

    assert others_can_see() == 0
    presence_db.query(f"ALTER TABLE public.{table} DISABLE ROW LEVEL SECURITY")
    assert others_can_see() == 1  # another user's device, in the open
    check = finding(presence_db, f"security.rls.{table}")
    assert "row level security is DISABLED" in check.detail
    fixed(presence_db, check)
    assert others_can_see() == 0


# -- the triggers of the log ------------------------------------------------------------


@pytest.mark.parametrize(
    ("trigger", "table", "change"),
    [
        ("presence_events_session_insert", "public.presence_sessions", "DROP"),
        ("presence_events_session_delete", "public.presence_sessions", "DISABLE"),
        ("presence_events_session_update", "public.presence_sessions", "DROP"),
        ("presence_events_user_update", "public.users", "DISABLE"),
    ],
)
def test_event_triggers_dropped_or_disabled(
    presence_db: PresenceDatabase, trigger: str, table: str, change: str
) -> None:
    user = presence_db.create_user()
    device = new_id()

    def transitions() -> list[tuple[str, str | None, str]]:
        """A session starts, changes status and ends: what the log records of it."""
        before = len(events(presence_db, user))
        beat(presence_db, user, device)
        beat(presence_db, user, device, "away")
        leave(presence_db, user, device)
        return shape(events(presence_db, user)[before:])

    complete = transitions()
    presence_db.query(
        f"DROP TRIGGER {trigger} ON {table}"
        if change == "DROP"
        else f"ALTER TABLE {table} DISABLE TRIGGER {trigger}"
    )
    assert len(transitions()) < len(complete)  # events are lost for good
    check = finding(presence_db, "events.triggers")
    assert f"{trigger} on {table} is {'missing' if change == 'DROP' else 'DISABLED'}" in (
        check.detail
    )
    fixed(presence_db, check)
    assert transitions() == complete


# -- presence_private: search_path and schema usage -------------------------------------


def test_a_private_definer_without_an_empty_search_path(presence_db: PresenceDatabase) -> None:
    presence_db.query("ALTER FUNCTION presence_private.sync_users(uuid[], timestamptz[]) "
                      "RESET search_path")  # fmt: skip
    check = finding(presence_db, "security.search_path")
    assert "without search_path = '': presence_private.sync_users." in check.detail
    fixed(presence_db, check)
    sessions_work(presence_db, presence_db.create_user())


def test_the_private_schema_revoked_from_signed_in_users(presence_db: PresenceDatabase) -> None:
    user = presence_db.create_user()
    presence_db.query("REVOKE USAGE ON SCHEMA presence_private FROM authenticated")
    err = expect_error(presence_db, "presence_counts", user_id=user)
    assert err.code == "42501"
    check = finding(presence_db, "security.reads")
    assert "authenticated cannot use schema presence_private" in check.detail
    assert check.fix == "GRANT USAGE ON SCHEMA presence_private TO authenticated;"
    fixed(presence_db, check)
    sessions_work(presence_db, user)


# -- clients writing sessions or the log directly ---------------------------------------


@pytest.mark.parametrize("table", ["presence_sessions", "presence_events"])
def test_write_privileges_on_sessions_or_the_log(presence_db: PresenceDatabase, table: str) -> None:
    victim, attacker = presence_db.create_user(), presence_db.create_user()
    beat(presence_db, victim, new_id())
    wipe = f"TRUNCATE public.{table} CASCADE"
    presence_db.query(f"GRANT TRUNCATE ON TABLE public.{table} TO authenticated")
    with session(presence_db, "authenticated", attacker) as conn:  # rolled back
        conn.execute(wipe)  # row level security does not stop it
        row = conn.execute(f"SELECT count(*) FROM public.{table}").fetchone()
        assert row == (0,)
    check = finding(presence_db, "security.writes")
    assert f"authenticated may change public.{table}" in check.detail
    fixed(presence_db, check)
    assert "permission denied" in denied(presence_db, "authenticated", attacker, wipe)
    assert len(sessions_of(presence_db, victim)) == 1
