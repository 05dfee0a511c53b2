"""verify_setup() findings about presence privacy (migration 7), on the real PostgreSQL.

As in test_verify_sessions.py: each test breaks one thing, shows that it really breaks
privacy (or presence), checks that exactly that finding appears, runs its fix (the SQL
statements in it, or the files it says to re-run, printed by ``presence-sdk sql``) and
checks that the setup is clean and works again. Clones of the template have no pg_cron
(``pg_cron`` is their one expected problem).
"""

from __future__ import annotations

import re

import psycopg
import pytest
from privacy_support import as_api, set_invisible, set_visibility
from sessions_support import expect_error
from sql_support import apply_fix, denied

from presence_sdk import cli, migrate, migrations
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
    """Run the fix's SQL statements; the setup is clean again."""
    apply_fix(db, check.fix)
    assert clone_problems(verify(db)) == [], str(verify(db))


def rerun_files(db: PresenceDatabase, fix: str, capsys: pytest.CaptureFixture[str]) -> list[str]:
    """Do what a re-run fix says: pipe ``presence-sdk sql --file NAME`` into the database,
    file by file, in the order given. Returns the names."""
    names = re.findall(r"`presence-sdk sql --file (\w+) \| psql <DATABASE_URL>`", fix)
    assert names, fix
    for name in names:
        capsys.readouterr()
        assert cli.main(["sql", "--file", name]) == 0
        with db.connect() as conn:
            conn.execute(capsys.readouterr().out)
    return names


def online_for(db: PresenceDatabase, viewer: str, target: str) -> bool:
    return bool(db.rpc("presence_is_online", {"user_id": target}, user_id=viewer))


# -- an older version, and a dropped part ------------------------------------------------


def test_a_database_from_before_privacy_is_told_to_migrate(presence_db: PresenceDatabase) -> None:
    me, other = (
        presence_db.create_user(status="online", last_heartbeat="now"),
        presence_db.create_user(),
    )
    with presence_db.connect() as conn:
        conn.execute(BY_NAME["privacy"].down)
    assert expect_error(presence_db, "presence_my_privacy", user_id=me).code == "PGRST202"
    report = verify(presence_db)
    assert clone_problems(report) == ["schema.version", "schema.privacy"], str(report)
    assert report.schema_version == 4
    check = next(c for c in report.problems if c.name == "schema.privacy")
    assert check.detail.startswith("the database has no presence privacy")
    assert "presence-sdk migrate" in check.fix
    # The fix as written (the template has no migration records: migrate applies every
    # idempotent file again, privacy among them).
    migrate(presence_db.dsn)
    report = verify(presence_db)
    assert clone_problems(report) == [], str(report)
    assert report.schema_version == expected_setup().schema_version == 5
    set_invisible(presence_db, me, True)
    assert online_for(presence_db, other, me) is False


def test_a_dropped_settings_table_is_named_and_re_running_the_file_restores_it(
    presence_db: PresenceDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    me, other = (
        presence_db.create_user(status="online", last_heartbeat="now"),
        presence_db.create_user(),
    )
    presence_db.query("DROP TABLE public.presence_privacy CASCADE")
    assert expect_error(presence_db, "presence_set_invisible", {"invisible": True},
                        user_id=me).code == "42P01"  # fmt: skip
    check = finding(presence_db, "schema.privacy")
    assert check.detail.startswith("public.presence_privacy, presence_private.privacy_settings")
    assert rerun_files(presence_db, check.fix, capsys) == ["privacy"]
    assert clone_problems(verify(presence_db)) == []
    set_invisible(presence_db, me, True)
    assert online_for(presence_db, other, me) is False


def test_a_dropped_rpc_is_restored_by_re_running_the_files_the_hint_names(
    presence_db: PresenceDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    """migrate skips recorded files; the hint names the files to run by hand, and running
    them (sessions, then every later file) restores the function without undoing what
    the later files changed (privacy still applies to every read)."""
    me, other = presence_db.create_user(), presence_db.create_user()
    presence_db.query("DROP FUNCTION public.presence_heartbeat(text)")
    check = finding(presence_db, "schema.functions")
    assert check.detail == "missing: presence_heartbeat"
    assert check.fix.startswith("defined by: presence_heartbeat (sessions). `presence-sdk")
    assert "presence-sdk migrate --dsn" not in check.fix
    # From the first file that names it (its grants are older than its definition).
    assert rerun_files(presence_db, check.fix, capsys) == [
        "presence_api", "setup_report", "hardening", "sessions", "events", "privacy",
    ]  # fmt: skip
    assert clone_problems(verify(presence_db)) == []
    presence_db.rpc("presence_heartbeat", {"new_status": "online"}, user_id=me)
    assert online_for(presence_db, other, me) is True
    set_invisible(presence_db, me, True)
    assert online_for(presence_db, other, me) is False


def test_a_dropped_presence_column_is_restored_by_the_files_the_hint_names(
    presence_db: PresenceDatabase, capsys: pytest.CaptureFixture[str]
) -> None:
    me, other = presence_db.create_user(), presence_db.create_user()
    # CASCADE takes the view and the reads built on the column with it.
    presence_db.query("ALTER TABLE public.users DROP COLUMN online_since CASCADE")
    report = verify(presence_db)
    check = next(c for c in report.problems if c.name == "users_table")
    assert check.detail == "public.users lacks column(s) online_since"
    names = rerun_files(presence_db, check.fix, capsys)
    assert names == [m.name for m in migrations()][1:]  # add_heartbeat and every later one
    assert clone_problems(verify(presence_db)) == []
    presence_db.rpc("presence_heartbeat", {"new_status": "online"}, user_id=me)
    assert online_for(presence_db, other, me) is True
    set_invisible(presence_db, me, True)
    assert online_for(presence_db, other, me) is False


# -- the settings table ------------------------------------------------------------------


def test_row_level_security_off_on_the_settings(presence_db: PresenceDatabase) -> None:
    me, other = presence_db.create_user(), presence_db.create_user()
    set_invisible(presence_db, me, True)
    read = "SELECT count(*) AS n FROM public.presence_privacy"
    assert as_api(presence_db, "authenticated", other, read) == [{"n": 0}]
    presence_db.query("ALTER TABLE public.presence_privacy DISABLE ROW LEVEL SECURITY")
    assert as_api(presence_db, "authenticated", other, read) == [{"n": 1}]  # who is invisible
    check = finding(presence_db, "security.privacy_settings")
    assert "row level security is DISABLED on public.presence_privacy" in check.detail
    fixed(presence_db, check)
    assert as_api(presence_db, "authenticated", other, read) == [{"n": 0}]


def test_clients_granted_writes_on_the_settings(presence_db: PresenceDatabase) -> None:
    me, other = (
        presence_db.create_user(status="online", last_heartbeat="now"),
        presence_db.create_user(),
    )
    set_invisible(presence_db, me, True)
    presence_db.query("GRANT TRUNCATE ON TABLE public.presence_privacy TO authenticated")
    with psycopg.connect(presence_db.dsn) as conn:  # as_api would roll it back: commit it
        conn.execute("SET ROLE authenticated")
        conn.execute("TRUNCATE public.presence_privacy")
    assert online_for(presence_db, other, me) is True  # made visible by someone else
    check = finding(presence_db, "security.privacy_settings")
    assert "authenticated may write public.presence_privacy directly" in check.detail
    fixed(presence_db, check)
    denied(presence_db, "authenticated", other, "TRUNCATE public.presence_privacy")


# -- the hook ----------------------------------------------------------------------------


def test_a_hook_clients_can_call(presence_db: PresenceDatabase) -> None:
    a, b = presence_db.create_user(), presence_db.create_user()
    ask = f"SELECT public.presence_can_see('{a}', '{b}') AS yes"
    denied(presence_db, "authenticated", a, ask)
    presence_db.query(
        "GRANT EXECUTE ON FUNCTION public.presence_can_see(uuid, uuid) TO authenticated"
    )
    assert as_api(presence_db, "authenticated", a, ask) == [{"yes": True}]
    check = finding(presence_db, "privacy.hook")
    assert "is executable by authenticated" in check.detail
    fixed(presence_db, check)
    denied(presence_db, "authenticated", a, ask)


def test_a_dropped_hook_hides_contacts_and_the_fix_restores_the_default(
    presence_db: PresenceDatabase,
) -> None:
    me, friend = (
        presence_db.create_user(status="online", last_heartbeat="now"),
        presence_db.create_user(),
    )
    set_visibility(presence_db, me, presence="contacts")
    assert online_for(presence_db, friend, me) is True  # the default: everyone a contact
    presence_db.query("DROP FUNCTION public.presence_can_see(uuid, uuid)")
    assert online_for(presence_db, friend, me) is False  # fail closed
    check = finding(presence_db, "privacy.hook")
    assert "public.presence_can_see(uuid, uuid) is missing: nobody counts" in check.detail
    fixed(presence_db, check)
    assert online_for(presence_db, friend, me) is True
    hook = next(c for c in verify(presence_db).checks if c.name == "privacy.hook")
    assert "is the default (everyone is a contact)" in hook.detail


def test_a_definer_hook_must_pin_its_search_path(presence_db: PresenceDatabase) -> None:
    presence_db.query(
        "CREATE OR REPLACE FUNCTION public.presence_can_see(viewer uuid, target uuid) "
        "RETURNS boolean LANGUAGE sql STABLE SECURITY DEFINER AS 'SELECT viewer <> target'"
    )
    check = finding(presence_db, "privacy.hook")
    assert "is SECURITY DEFINER without search_path" in check.detail
    fixed(presence_db, check)
    hook = next(c for c in verify(presence_db).checks if c.name == "privacy.hook")
    assert "is the app's" in hook.detail


# -- the internals -----------------------------------------------------------------------


def test_the_invisible_writer_granted_to_clients(presence_db: PresenceDatabase) -> None:
    victim, attacker = presence_db.create_user(), presence_db.create_user()
    writer = "presence_private.set_invisible(uuid[], boolean)"
    presence_db.query(f"GRANT EXECUTE ON FUNCTION {writer} TO authenticated")
    call = f"SELECT presence_private.set_invisible(ARRAY['{victim}'::uuid], true) AS n"
    assert as_api(presence_db, "authenticated", attacker, call) == [{"n": 1}]  # anyone's
    check = finding(presence_db, "security.privacy_internals")
    assert "presence_private.set_invisible(uuid[],boolean) is executable by authenticated" in (
        check.detail
    )
    fixed(presence_db, check)
    denied(presence_db, "authenticated", attacker, call)


def test_the_visibility_rule_revoked_from_signed_in_users(presence_db: PresenceDatabase) -> None:
    me, other = (
        presence_db.create_user(status="online", last_heartbeat="now"),
        presence_db.create_user(),
    )
    presence_db.query(
        "REVOKE EXECUTE ON FUNCTION presence_private.visible_to(uuid, uuid) FROM authenticated"
    )
    # Every read that applies the rule fails (the one-id reads skip it for a user whose
    # settings restrict nothing, so a bulk read shows it).
    assert expect_error(presence_db, "presence_list_online", {"page_size": 10},
                        user_id=other).code == "42501"  # fmt: skip
    check = finding(presence_db, "security.privacy_internals")
    assert "authenticated cannot execute presence_private.visible_to(uuid,uuid)" in check.detail
    fixed(presence_db, check)
    assert online_for(presence_db, other, me) is True


# -- direct reads of the presence columns ------------------------------------------------

DIRECT_READ = "SELECT status, last_heartbeat FROM public.users WHERE id = %(me)s"


@pytest.mark.parametrize(
    ("grant", "found"),
    [
        ("GRANT SELECT ON TABLE public.users TO authenticated",
         "authenticated holds SELECT on the whole table"),
        ("GRANT SELECT (last_heartbeat, status) ON TABLE public.users TO PUBLIC",
         "PUBLIC holds SELECT on status, last_heartbeat"),
    ],
)  # fmt: skip
def test_selecting_presence_columns_granted_again(
    presence_db: PresenceDatabase, grant: str, found: str
) -> None:
    me, other = (
        presence_db.create_user(status="online", last_heartbeat="now"),
        presence_db.create_user(),
    )
    set_visibility(presence_db, me, presence="nobody", last_seen="nobody")
    denied(presence_db, "authenticated", other, DIRECT_READ)
    presence_db.query(grant)
    # The settings say nobody; the table says everything.
    rows = as_api(presence_db, "authenticated", other, DIRECT_READ, {"me": me})
    assert rows[0]["status"] == "online"
    check = finding(presence_db, "security.presence_column_reads")
    assert found in check.detail
    fixed(presence_db, check)
    denied(presence_db, "authenticated", other, DIRECT_READ)
    # The app's own columns stay readable.
    own = as_api(presence_db, "authenticated", other, "SELECT id::text FROM public.users "
                 "WHERE id = %(me)s", {"me": me})  # fmt: skip
    assert own == [{"id": me}]


# -- Realtime ------------------------------------------------------------------------------


def test_users_in_the_realtime_publication_is_flagged(presence_db: PresenceDatabase) -> None:
    presence_db.query("CREATE PUBLICATION supabase_realtime")
    assert clone_problems(verify(presence_db)) == []
    presence_db.query("ALTER PUBLICATION supabase_realtime ADD TABLE public.users")
    report = verify(presence_db)
    # A warning: listed, but it does not fail the setup (apps stream their own columns).
    assert clone_problems(report) == []
    assert [c.name for c in report.warnings] == ["privacy.realtime"]
    check = report.warnings[0]
    assert check.warning
    assert not check.ok
    assert check.detail.startswith("public.users is in the supabase_realtime")
    assert "[WARN] privacy.realtime" in str(report)
    fixed(presence_db, check)
    assert verify(presence_db).warnings == ()
    published = presence_db.query(
        "SELECT count(*) AS n FROM pg_publication_tables WHERE pubname = 'supabase_realtime'"
    )
    assert published == [{"n": 0}]


# -- the privacy RPCs' grants ---------------------------------------------------------------


def test_the_batch_invisible_rpc_granted_to_signed_in_users(presence_db: PresenceDatabase) -> None:
    victim, attacker = (
        presence_db.create_user(status="online", last_heartbeat="now"),
        presence_db.create_user(),
    )
    fn = "public.presence_set_invisible_for(uuid[], boolean)"
    presence_db.query(f"GRANT EXECUTE ON FUNCTION {fn} TO authenticated")
    presence_db.rpc("presence_set_invisible_for", {"user_ids": [victim], "invisible": True},
                    user_id=attacker)  # fmt: skip
    assert online_for(presence_db, attacker, victim) is False
    check = finding(presence_db, "security.presence_set_invisible_for")
    assert "executable by authenticated" in check.detail
    fixed(presence_db, check)
    assert expect_error(presence_db, "presence_set_invisible_for",
                        {"user_ids": [victim], "invisible": False},
                        user_id=attacker).code == "42501"  # fmt: skip


def test_the_settings_rpcs_revoked_from_signed_in_users(presence_db: PresenceDatabase) -> None:
    me = presence_db.create_user()
    presence_db.query(
        "REVOKE EXECUTE ON FUNCTION public.presence_my_privacy() FROM authenticated, PUBLIC"
    )
    assert expect_error(presence_db, "presence_my_privacy", user_id=me).code == "42501"
    check = finding(presence_db, "security.client_api")
    assert "cannot execute presence_my_privacy" in check.detail
    fixed(presence_db, check)
    assert presence_db.rpc("presence_my_privacy", user_id=me)["invisible"] is False
