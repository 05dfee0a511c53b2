"""The pure judge of verify_setup() on presence privacy (migration 7): wording, fixes and
edge cases. Every finding is also proven on a real database in
tests/integration/test_verify_privacy.py."""

from __future__ import annotations

from typing import Any

import pytest
from test_verify_report import check, function, healthy, only_problem

from presence_sdk._verify import build_report, expected_setup

PRIVACY_RERUN = (
    "re-run the migration by hand, in order (idempotent): "
    "`presence-sdk sql --file privacy | psql <DATABASE_URL>`"
)


def private(raw: dict[str, Any], name: str) -> dict[str, Any]:
    found: dict[str, Any] = next(f for f in raw["private_schema"]["functions"] if f["name"] == name)
    return found


def test_a_healthy_report_passes_every_privacy_check() -> None:
    report = build_report(healthy())
    assert report.ok, str(report)
    assert check(report, "privacy.hook").detail == (
        "public.presence_can_see(uuid, uuid) is the default (everyone is a contact), and "
        "clients cannot call it"
    )
    for name in (
        "schema.privacy",
        "security.privacy_settings",
        "security.presence_column_reads",
        "security.privacy_internals",
        "privacy.realtime",
        "security.presence_set_invisible_for",
    ):
        assert check(report, name).ok


def test_a_database_from_before_privacy_is_told_to_migrate() -> None:
    raw = healthy()
    raw["schema_version"] = 4
    del raw["privacy"], raw["relations"]["presence_privacy"]
    privacy_rpcs = ("presence_set_invisible", "presence_set_visibility", "presence_my_privacy")
    raw["functions"] = [
        f
        for f in raw["functions"]
        if f["name"] not in (*privacy_rpcs, "presence_set_invisible_for")
    ]
    report = build_report(raw)
    assert [c.name for c in report.problems] == ["schema.version", "schema.privacy"]
    finding = check(report, "schema.privacy")
    assert finding.detail.startswith("the database has no presence privacy (invisible mode")
    assert finding.fix.startswith("older version of the presence SQL: apply the newer")
    assert "presence-sdk migrate --dsn <DATABASE_URL>" in finding.fix
    # The checks of what migration 7 installs are skipped, not failed.
    names = [c.name for c in report.checks]
    assert "privacy.hook" not in names
    assert "security.presence_column_reads" not in names


def test_a_report_from_0_1_0_leaves_privacy_to_schema_report() -> None:
    raw = healthy()
    del raw["privacy"], raw["relations"]
    assert "schema.privacy" not in [c.name for c in build_report(raw).checks]


def test_a_dropped_settings_table_is_re_run_by_hand() -> None:
    raw = healthy()
    raw["privacy"]["installed"] = False
    raw["relations"]["presence_privacy"] = {"exists": False}
    finding = only_problem(build_report(raw), "schema.privacy")
    assert finding.detail.startswith("public.presence_privacy missing: the privacy settings")
    assert finding.fix == PRIVACY_RERUN


def test_dropped_internals_are_named() -> None:
    raw = healthy()
    raw["privacy"]["objects"]["presence_private.visible_to(uuid, uuid)"] = False
    raw["privacy"]["objects"]["presence_private.stored_presence"] = False
    finding = only_problem(build_report(raw), "schema.privacy")
    assert finding.detail.startswith(
        "presence_private.stored_presence, presence_private.visible_to(uuid, uuid) missing"
    )
    assert finding.fix == PRIVACY_RERUN


def test_the_settings_table_needs_rls_and_no_client_writes() -> None:
    raw = healthy()
    table = raw["relations"]["presence_privacy"]
    table["rls_enabled"] = False
    table["privileges"]["authenticated"] = ["SELECT", "TRUNCATE", "UPDATE"]
    finding = only_problem(build_report(raw), "security.privacy_settings")
    assert "row level security is DISABLED on public.presence_privacy" in finding.detail
    assert "authenticated may write public.presence_privacy directly" in finding.detail
    assert finding.fix == (
        "ALTER TABLE public.presence_privacy ENABLE ROW LEVEL SECURITY; "
        "REVOKE INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON TABLE "
        "public.presence_privacy FROM PUBLIC, authenticated;"
    )


def test_a_missing_hook_hides_contacts_and_says_how_to_restore_it() -> None:
    raw = healthy()
    raw["privacy"]["hook"] = {"exists": False, "execute": {}}
    finding = only_problem(build_report(raw), "privacy.hook")
    assert "public.presence_can_see(uuid, uuid) is missing: nobody counts" in finding.detail
    assert finding.fix.endswith(
        "CREATE FUNCTION public.presence_can_see(viewer uuid, target uuid) RETURNS boolean "
        "LANGUAGE sql STABLE SET search_path = '' AS 'SELECT true'; REVOKE ALL ON FUNCTION "
        "public.presence_can_see(uuid, uuid) FROM PUBLIC, anon, authenticated, service_role;"
    )


def test_a_hook_clients_can_call_or_a_definer_hook_without_search_path() -> None:
    raw = healthy()
    hook = raw["privacy"]["hook"]
    hook.update(is_default=False, security_definer=True, config=None)
    hook["execute"]["authenticated"] = True
    finding = only_problem(build_report(raw), "privacy.hook")
    assert "is executable by authenticated: anyone with the API key" in finding.detail
    assert "is SECURITY DEFINER without search_path" in finding.detail
    assert finding.fix == (
        "REVOKE ALL ON FUNCTION public.presence_can_see(uuid, uuid) FROM PUBLIC, anon, "
        "authenticated; ALTER FUNCTION public.presence_can_see(uuid, uuid) SET search_path = '';"
    )
    hook["execute"]["authenticated"] = False
    hook["config"] = ['search_path=""']
    assert check(build_report(raw), "privacy.hook").detail.startswith(
        "public.presence_can_see(uuid, uuid) is the app's"
    )


def test_writers_are_for_the_rpcs_and_readers_for_the_reads() -> None:
    raw = healthy()
    private(raw, "presence_private.set_invisible(uuid[],boolean)")["execute"]["authenticated"] = (
        True
    )
    private(raw, "presence_private.visible_to(uuid,uuid)")["execute"]["authenticated"] = False
    private(raw, "presence_private.viewer_sees_all()")["execute"]["anon"] = True
    finding = only_problem(build_report(raw), "security.privacy_internals")
    assert (
        "presence_private.set_invisible(uuid[],boolean) is executable by authenticated"
        in finding.detail
    )
    assert "authenticated cannot execute presence_private.visible_to(uuid,uuid)" in finding.detail
    assert "presence_private.viewer_sees_all() is executable by anon" in finding.detail
    assert finding.fix == (
        "REVOKE ALL ON FUNCTION presence_private.set_invisible(uuid[],boolean) FROM PUBLIC, "
        "anon, authenticated; REVOKE ALL ON FUNCTION presence_private.viewer_sees_all() FROM "
        "PUBLIC, anon; GRANT EXECUTE ON FUNCTION presence_private.visible_to(uuid,uuid) TO "
        "authenticated;"
    )


def test_a_table_wide_select_again_is_narrowed_to_the_apps_columns() -> None:
    raw = healthy()
    raw["users_table"]["columns"] = [
        "id",
        "status",
        "Display Name",
        "last_heartbeat",
        "online_since",
    ]
    raw["privacy"]["readable_presence_columns"]["authenticated"] = ["status", "last_heartbeat"]
    raw["privacy"]["select_grants"]["authenticated"]["table"] = True
    raw["privacy"]["select_grants"]["PUBLIC"]["columns"] = ["last_heartbeat"]
    finding = only_problem(build_report(raw), "security.presence_column_reads")
    assert finding.detail.startswith(
        "PUBLIC holds SELECT on last_heartbeat; authenticated holds SELECT on the whole table "
        "of public.users: any signed-in user can read every user's status"
    )
    assert finding.fix.startswith(
        "REVOKE SELECT (last_heartbeat) ON TABLE public.users FROM PUBLIC; "
        "REVOKE SELECT ON TABLE public.users FROM authenticated; "
        'GRANT SELECT (id, "Display Name") ON TABLE public.users TO authenticated; '
    )


def test_presence_columns_readable_through_another_role() -> None:
    raw = healthy()
    raw["privacy"]["readable_presence_columns"]["anon"] = ["status"]
    finding = only_problem(build_report(raw), "security.presence_column_reads")
    assert "anon can SELECT status (through a role it belongs to)" in finding.detail
    assert "\\du anon" in finding.fix


def test_users_in_the_realtime_publication_is_a_warning() -> None:
    raw = healthy()
    raw["privacy"]["users_in_realtime"] = True
    report = build_report(raw)
    assert report.ok
    assert report.problems == ()
    (finding,) = report.warnings
    assert finding.name == "privacy.realtime"
    assert finding.warning
    assert not finding.ok
    assert finding.detail.startswith("public.users is in the supabase_realtime")
    assert "ALTER PUBLICATION supabase_realtime DROP TABLE public.users;" in finding.fix
    assert str(report).startswith("presence setup: OK, 1 warning(s)")
    assert report.to_dict()["ok"] is True
    assert {"name": "privacy.realtime", "warning": True}.items() <= next(
        c for c in report.to_dict()["checks"] if c["name"] == "privacy.realtime"
    ).items()


def test_the_privacy_rpcs_are_client_api_and_the_batch_is_the_service_roles() -> None:
    raw = healthy()
    function(raw, "presence_my_privacy")["execute"]["authenticated"] = False
    function(raw, "presence_set_visibility")["execute"]["anon"] = True
    function(raw, "presence_set_invisible_for")["execute"].update(
        authenticated=True, service_role=False
    )
    report = build_report(raw)
    assert [c.name for c in report.problems] == [
        "security.presence_set_invisible_for",
        "security.client_api",
        "security.anon_api",
    ]
    batch, client, anon = report.problems
    assert "presence_set_invisible_for is executable by authenticated" in batch.detail
    assert batch.fix == (
        "REVOKE EXECUTE ON FUNCTION public.presence_set_invisible_for(uuid[], boolean) FROM "
        "PUBLIC, anon, authenticated;"
    )
    assert "cannot execute presence_my_privacy" in client.detail
    assert "public.presence_set_visibility(text, text, uuid)" in anon.fix


# -- schema.functions: migrate skips recorded files, so the fix names the files to re-run


def test_a_missing_function_names_its_file_and_every_later_one() -> None:
    raw = healthy()
    function(raw, "presence_heartbeat")["exists"] = False
    function(raw, "presence_my_privacy")["exists"] = False
    finding = only_problem(build_report(raw), "schema.functions")
    assert finding.detail == "missing: presence_heartbeat, presence_my_privacy"
    # Its grants are in an older file than its definition: from the first file naming it.
    files = ["presence_api", "setup_report", "hardening", "sessions", "events", "privacy"]
    assert finding.fix == (
        "defined by: presence_heartbeat (sessions), presence_my_privacy (privacy). "
        "`presence-sdk migrate` skips files it has recorded, so re-run the migrations by "
        "hand, in order (idempotent): "
        + ", then ".join(f"`presence-sdk sql --file {f} | psql <DATABASE_URL>`" for f in files)
    )
    only_privacy = healthy()
    function(only_privacy, "presence_my_privacy")["exists"] = False
    assert only_problem(build_report(only_privacy), "schema.functions").fix.endswith(
        "(privacy). `presence-sdk migrate` skips files it has recorded, so " + PRIVACY_RERUN
    )
    assert "presence-sdk migrate --dsn" not in finding.fix


def test_a_function_the_shipped_sql_does_not_know_reruns_everything() -> None:
    raw = healthy()
    raw["functions"].append({"name": "presence_from_the_future", "exists": False, "config": None})
    finding = only_problem(build_report(raw), "schema.functions")
    assert finding.fix.endswith("`presence-sdk sql --no-schema | psql <DATABASE_URL>`")


@pytest.mark.parametrize(
    ("name", "mode"), [("presence_get", "INVOKER"), ("presence_leave", "DEFINER")]
)
def test_a_wrong_security_mode_is_altered_in_place(name: str, mode: str) -> None:
    raw = healthy()
    entry = function(raw, name)
    entry["security_definer"] = not entry["security_definer"]
    finding = only_problem(build_report(raw), "schema.functions")
    assert finding.fix == f"ALTER FUNCTION {expected_setup().signatures[name]} SECURITY {mode};"
