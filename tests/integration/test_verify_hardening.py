"""verify_setup() findings added after attacking 0.1.0 (issue 11), on the real PostgreSQL.

Each test breaks one thing that broke reads or security while 0.1.0's ``verify`` still
said OK, checks that exactly that finding appears, runs every statement of its fix and
checks that the finding is gone and the thing works again. Clones of the template have
no pg_cron (``pg_cron`` is their one expected problem); the job's findings are provoked
on the cron database inside a transaction that is rolled back.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from cron_support import effective_period, has_interval_schedules
from sql_support import HAND_MADE_USERS, apply_fix, denied, session

from presence_sdk import migrate, migrations
from presence_sdk._models import SetupCheck, SetupReport
from presence_sdk._verify_io import fetch_report, verify_setup
from presence_sdk.testing import (
    PostgRESTError,
    PresenceDatabase,
    PresenceTestServer,
    apply_presence_sql,
    install_supabase_shim,
)

pytestmark = pytest.mark.integration


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


def reads_work(db: PresenceDatabase, user: str) -> None:
    assert db.rpc("presence_settings")["timeout_seconds"] == 45
    db.rpc("presence_heartbeat", user_id=user)
    assert db.rpc("presence_is_online", {"user_id": user}, user_id=user) is True
    assert db.rpc("presence_counts", user_id=user)["online"] == 1


# -- a SECURITY DEFINER function without search_path = '' ----------------------------


@pytest.mark.parametrize(
    ("function", "change"),
    [
        ("public.presence_heartbeat(text)", "RESET search_path"),
        ("public.mark_inactive_users_offline()", "SET search_path = public, pg_temp"),
        ("public.handle_new_auth_user()", "RESET ALL"),
    ],
)
def test_definer_without_an_empty_search_path(
    presence_db: PresenceDatabase, function: str, change: str
) -> None:
    presence_db.query(f"ALTER FUNCTION {function} {change}")
    check = finding(presence_db, "security.search_path")
    name = function.removeprefix("public.").split("(")[0]
    assert f"without search_path = '': {name}." in check.detail
    assert check.fix == f"ALTER FUNCTION {function} SET search_path = '';"
    fixed(presence_db, check)


# -- SELECT revoked on what the reads use ---------------------------------------------


@pytest.mark.parametrize(
    ("relation", "role"),
    [("user_presence", "authenticated"), ("presence_config", "authenticated"),
     ("presence_config", "anon")],
)  # fmt: skip
def test_select_revoked_on_what_reads_use(
    presence_db: PresenceDatabase, relation: str, role: str
) -> None:
    user = presence_db.create_user()
    presence_db.query(f"REVOKE SELECT ON TABLE public.{relation} FROM {role}")
    # It really breaks the reads... (since sessions, the presence reads take the timeout
    # through the owner's aggregate: what still reads public.presence_config as the
    # caller is presence_settings(), which the clients call for their timings; since
    # privacy, a one-id read skips the view for a user whose settings restrict nothing,
    # so a lookup of two ids shows it)
    call: tuple[str, dict[str, Any], str | None] = (
        ("presence_settings", {}, None if role == "anon" else user)
        if relation == "presence_config"
        else ("presence_get", {"user_ids": [user, user]}, user)
    )
    with pytest.raises(PostgRESTError) as raised:
        presence_db.rpc(call[0], call[1], user_id=call[2])
    assert raised.value.code == "42501"
    # ...and verify says so, with the grant that repairs them.
    check = finding(presence_db, "security.reads")
    assert f"{role} cannot SELECT public.{relation}" in check.detail
    assert check.fix == f"GRANT SELECT ON TABLE public.{relation} TO {role};"
    fixed(presence_db, check)
    reads_work(presence_db, user)


def test_write_privileges_on_the_timings(presence_db: PresenceDatabase) -> None:
    presence_db.query("GRANT TRUNCATE, UPDATE ON TABLE public.presence_config TO authenticated")
    check = finding(presence_db, "security.writes")
    assert "authenticated may change public.presence_config" in check.detail
    fixed(presence_db, check)
    assert "permission denied" in denied(
        presence_db, "authenticated", None, "TRUNCATE public.presence_config"
    )


# -- a read policy dropped --------------------------------------------------------------


@pytest.mark.parametrize(
    ("policy", "words"),
    [
        ("presence_config_read ON public.presence_config", "read public.presence_config"),
        ("users_select_authenticated ON public.users", "read public.users"),
    ],
)
def test_read_policy_dropped(presence_db: PresenceDatabase, policy: str, words: str) -> None:
    user = presence_db.create_user()
    presence_db.query(f"DROP POLICY {policy}")
    # What reads the table as the caller finds nothing (presence_config: since sessions,
    # presence_settings() only; the presence reads take the timeout as the owner).
    if "presence_config" in policy:
        assert presence_db.rpc("presence_settings", user_id=user) is None
    else:
        assert presence_db.rpc("presence_get", {"user_ids": [user]}, user_id=user) == []
    check = finding(presence_db, "security.policies")
    assert words in check.detail
    assert "returns nothing" in check.detail or "return nothing" in check.detail
    fixed(presence_db, check)
    reads_work(presence_db, user)


# -- clients able to write presence columns ---------------------------------------------


@pytest.mark.parametrize(
    ("grant", "role", "forge"),
    [
        ("UPDATE", "authenticated", "UPDATE public.users SET last_heartbeat = 'infinity'"),
        ("UPDATE (status, last_heartbeat)", "authenticated", "UPDATE public.users SET status = ''"),
        ("INSERT", "anon", "INSERT INTO public.users (id, online_since) VALUES (NULL, now())"),
    ],
)  # fmt: skip
def test_clients_able_to_write_presence_columns(
    presence_db: PresenceDatabase, grant: str, role: str, forge: str
) -> None:
    me = presence_db.create_user()
    presence_db.query(f"GRANT {grant} ON TABLE public.users TO {role}")
    check = finding(presence_db, "security.presence_columns")
    assert f"{role} can {grant.split(maxsplit=1)[0]}" in check.detail
    assert "last_heartbeat = 'infinity'" in check.detail
    fixed(presence_db, check)
    assert "permission denied for table users" in denied(presence_db, role, me, forge)
    # The profile columns stay writable as schema.sql grants them.
    with session(presence_db, "authenticated", me) as conn:
        changed = conn.execute(
            "UPDATE public.users SET display_name = 'Me' WHERE id = %s", (me,)
        ).rowcount
    assert changed == 1


# -- the sign-up trigger ---------------------------------------------------------------


def new_auth_user(db: PresenceDatabase) -> str:
    user = str(uuid.uuid4())
    db.query("INSERT INTO auth.users (id) VALUES (%s)", (user,))
    return user


@pytest.mark.parametrize(
    ("breakage", "words"),
    [
        ("DROP TRIGGER on_auth_user_created_presence ON auth.users", "no trigger on auth.users"),
        (
            "ALTER TABLE auth.users DISABLE TRIGGER on_auth_user_created_presence",
            "on_auth_user_created_presence on auth.users is DISABLED",
        ),
    ],
)
def test_signup_trigger_dropped_or_disabled(
    presence_db: PresenceDatabase, breakage: str, words: str
) -> None:
    presence_db.query(breakage)
    meanwhile = new_auth_user(presence_db)
    with pytest.raises(PostgRESTError) as raised:
        presence_db.rpc("presence_heartbeat", user_id=meanwhile)
    assert raised.value.code == "PT404"
    check = finding(presence_db, "signup_trigger")
    assert words in check.detail
    assert "PT404" in check.detail
    fixed(presence_db, check)
    # Both the user who signed up meanwhile and the next one can beat.
    for user in (meanwhile, new_auth_user(presence_db)):
        assert presence_db.rpc("presence_heartbeat", user_id=user) is not None


# -- anon holding EXECUTE on the per-user RPCs (moved from issue 9) ------------------------


@pytest.mark.parametrize("grantee", ["anon", "PUBLIC"])
def test_anon_executing_per_user_rpcs(presence_db: PresenceDatabase, grantee: str) -> None:
    presence_db.query(
        f"GRANT EXECUTE ON FUNCTION public.presence_heartbeat(text), "
        f"public.presence_counts() TO {grantee}"
    )
    check = finding(presence_db, "security.anon_api")
    assert "can execute presence_heartbeat, presence_counts" in check.detail
    assert check.fix.startswith(
        "REVOKE EXECUTE ON FUNCTION public.presence_heartbeat(text), public.presence_counts() "
        "FROM PUBLIC, anon;"
    )
    fixed(presence_db, check)
    with pytest.raises(PostgRESTError) as raised:
        presence_db.rpc("presence_heartbeat")
    assert (raised.value.status, raised.value.code) == (401, "42501")
    reads_work(presence_db, presence_db.create_user())


def test_migration_2_revokes_anon_execute(presence_db: PresenceDatabase) -> None:
    presence_db.query("GRANT EXECUTE ON FUNCTION public.presence_leave() TO anon")
    assert clone_problems(verify(presence_db)) == ["security.anon_api"]
    presence_db.query(next(m for m in migrations() if m.name == "presence_api").up)
    assert clone_problems(verify(presence_db)) == []


# -- no false alarms --------------------------------------------------------------------


def test_no_false_alarm_on_a_hand_made_users_table(presence_server: PresenceTestServer) -> None:
    with presence_server.database(template=None) as db:
        with db.connect() as conn:
            install_supabase_shim(conn)
            conn.execute(HAND_MADE_USERS)
            apply_presence_sql(conn, schema=False)
        report = verify(db)
    assert clone_problems(report) == [], str(report)
    trigger = next(c for c in report.checks if c.name == "signup_trigger")
    assert "the app creates public.users rows itself" in trigger.detail


def test_an_older_setup_report_is_named_and_re_applying_it_fixes_it(
    presence_db: PresenceDatabase,
) -> None:
    """A database whose report predates these checks gets one finding, not silence."""
    presence_db.query(
        "ALTER FUNCTION public.presence_setup_report() RENAME TO presence_setup_report_full"
    )
    presence_db.query(
        "CREATE FUNCTION public.presence_setup_report() RETURNS jsonb LANGUAGE sql "
        "SECURITY DEFINER SET search_path = '' AS $$ "
        "SELECT public.presence_setup_report_full() - 'relations' - 'signup_trigger' "
        "- 'run_history' $$; "
        "REVOKE EXECUTE ON FUNCTION public.presence_setup_report() FROM PUBLIC, anon, "
        "authenticated"
    )
    check = finding(presence_db, "schema.report")
    assert "lacks: grants and policies, sign-up trigger, run history" in check.detail
    assert "presence-sdk migrate" in check.fix
    # The fix as written: the template was set up without records, so migrate
    # applies every (idempotent) file again, the report's with them.
    assert migrate(presence_db.dsn).applied == tuple(m.version for m in migrations())
    presence_db.query("DROP FUNCTION public.presence_setup_report_full()")
    assert clone_problems(verify(presence_db)) == []


# -- the job: sweep longer than the timeout, run history -----------------------------------


@contextmanager
def cron_scenario(db: PresenceDatabase) -> Iterator[psycopg.Connection[Any]]:
    """A transaction on the cron database that is always rolled back (pg_cron only
    learns about job changes at COMMIT, so the real job is undisturbed)."""
    with psycopg.connect(db.dsn, autocommit=False) as conn:
        try:
            yield conn
        finally:
            conn.rollback()


def test_a_sweep_longer_than_the_timeout_is_fixed_at_its_cause(
    presence_cron_db: PresenceDatabase, cron_version: str
) -> None:
    """As 0.1.0 allowed: timeout 45 s, sweep 50 s; re-scheduling alone changes nothing."""
    with cron_scenario(presence_cron_db) as conn:
        conn.execute(
            "ALTER TABLE public.presence_config "
            "DROP CONSTRAINT presence_config_sweep_within_timeout"
        )
        conn.execute("UPDATE public.presence_config SET sweep_interval_seconds = 50")
        conn.execute("SELECT public.presence_schedule_sweep()")
        report = fetch_report(conn)
        # pg_cron < 1.5 sweeps every minute whatever the setting: only the setting is wrong.
        schedule = ["cron.job.schedule"] if has_interval_schedules(cron_version) else []
        assert [c.name for c in report.problems] == ["settings", *schedule], str(report)
        want = "SELECT public.presence_configure(sweep_interval_seconds => 20);"
        assert all(c.fix.endswith(want) for c in report.problems), str(report)
        assert "longer than the timeout (45 s)" in report.problems[0].detail
        conn.execute(want)
        fixed_report = fetch_report(conn)
        assert fixed_report.ok, str(fixed_report)
        assert fixed_report.sweep_period_seconds == effective_period(cron_version)


def test_a_growing_run_history_is_reported_with_its_size(
    presence_cron_db: PresenceDatabase, cron_version: str
) -> None:
    with cron_scenario(presence_cron_db) as conn:
        conn.execute(
            "INSERT INTO cron.job_run_details (jobid, job_pid, database, username, command, "
            "status, return_message, start_time, end_time) "
            "SELECT j.jobid, 0, current_database(), current_user, j.command, 'succeeded', "
            "'1 row', now() - interval '30 days' + g * interval '20 seconds', "
            "now() - interval '30 days' + g * interval '20 seconds' "
            "FROM cron.job AS j CROSS JOIN generate_series(1, 12000) AS g "
            "WHERE j.jobname = 'mark-inactive-users'"
        )
        # The newest run is recent, as with a live job (recent_runs go by runid).
        conn.execute(
            "INSERT INTO cron.job_run_details (jobid, job_pid, database, username, command, "
            "status, return_message, start_time, end_time) "
            "SELECT jobid, 0, current_database(), current_user, command, 'succeeded', '1 row', "
            "now() - interval '5 seconds', now() - interval '5 seconds' "
            "FROM cron.job WHERE jobname = 'mark-inactive-users'"
        )
        report = fetch_report(conn)
        assert [c.name for c in report.problems] == ["cron.job.history"], str(report)
        check = report.problems[0]
        assert "12000 of them older than a day, the oldest from 29 days ago" in check.detail
        assert "pg_cron never deletes runs" in check.detail
        assert f"({86400 // effective_period(cron_version)} a day)" in check.detail
        for statement in ["SELECT public.presence_prune_job_history(1000000);"]:
            assert statement in check.fix
            conn.execute(statement)
        after = fetch_report(conn)
        assert after.ok, str(after)
        history = next(c for c in after.checks if c.name == "cron.job.history")
        assert ", 0 older than a day" in history.detail
