"""verify_setup() checks of the schema: version, functions, report, users table, settings.

Each function takes the :class:`~presence_sdk._verify_facts.Facts` of one setup report
and yields its findings; :data:`presence_sdk._verify.CHECKS` lists them in order.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

from presence_sdk._models import SetupCheck
from presence_sdk._sql import migrations
from presence_sdk._verify_facts import (
    MIGRATE_CMD,
    MIGRATE_HINT,
    Facts,
    failed,
    get,
    passed,
    rerun_from,
)

__all__ = [
    "check_report_sections",
    "check_schema_functions",
    "check_schema_version",
    "check_settings",
    "check_signup_trigger",
    "check_users_table",
]

_RESTORE_SETTINGS = (
    "INSERT INTO public.presence_config (singleton) VALUES (true) "
    "ON CONFLICT (singleton) DO NOTHING;"
)
_BACKFILL = (
    "then give users who signed up meanwhile their row: INSERT INTO public.users (id) "
    "SELECT id FROM auth.users ON CONFLICT (id) DO NOTHING;"
)


def check_schema_version(facts: Facts) -> Iterator[SetupCheck]:
    """The database's presence schema is the one this package expects."""
    want = facts.expected.schema_version
    have = facts.raw.get("schema_version")
    if not isinstance(have, int):
        yield failed("schema.version", "the setup report has no schema_version", MIGRATE_HINT)
    elif have < want:
        yield failed(
            "schema.version",
            f"database has presence schema version {have}, this package expects {want}",
            "apply the newer migrations: " + MIGRATE_CMD,
        )
    elif have > want:
        yield passed(
            "schema.version",
            f"database has presence schema version {have}, newer than this package "
            f"({want}): upgrade presence-sdk",
        )
    else:
        yield passed("schema.version", f"presence schema version {have}")


def check_schema_functions(facts: Facts) -> Iterator[SetupCheck]:
    """Every presence function exists, SECURITY DEFINER exactly where the SQL says."""
    if not facts.functions:
        yield failed("schema.functions", "the setup report lists no functions", MIGRATE_HINT)
        return
    missing = sorted(name for name, f in facts.functions.items() if not f.get("exists"))
    wrong: list[str] = []
    fixes: list[str] = []
    for name, fn in sorted(facts.functions.items()):
        if not fn.get("exists") or name not in facts.expected.signatures:
            continue
        should = name in facts.expected.security_definer
        if bool(fn.get("security_definer")) != should:
            wrong.append(
                f"{name} should {'' if should else 'not '}be SECURITY DEFINER"
                + ("" if should else " (it would bypass row level security)")
            )
            mode = "SECURITY DEFINER" if should else "SECURITY INVOKER"
            fixes.append(f"ALTER FUNCTION {facts.signature(name)} {mode};")
    if missing:
        fixes.insert(0, _recreate(facts, missing))
    if missing or wrong:
        parts = [f"missing: {', '.join(missing)}"] if missing else []
        yield failed("schema.functions", "; ".join([*parts, *wrong]), " ".join(fixes))
    else:
        yield passed("schema.functions", f"all {len(facts.functions)} presence functions present")


def _recreate(facts: Facts, missing: list[str]) -> str:
    """How to bring back dropped functions: the migrations that make them, run again.

    ``presence-sdk migrate`` skips the files it has recorded, so it would change
    nothing. The files are re-run by hand from the oldest one that names a missing
    function: its definition may be in a later file and its grants in an earlier one
    (a re-created function gets the schema's default privileges, e.g. Supabase's
    EXECUTE for anon, until the file that narrows them runs again).
    """
    shipped = migrations()
    first = [
        next((i for i, m in enumerate(shipped) if f"public.{name}(" in m.up), None)
        for name in missing
    ]
    if any(i is None for i in first):  # a function the shipped SQL does not know
        return (
            "re-run every migration by hand, in order (idempotent; `presence-sdk migrate` "
            "skips the files it has recorded): `presence-sdk sql --no-schema | psql "
            "<DATABASE_URL>`"
        )
    start = min(i for i in first if i is not None)
    defined = ", ".join(
        f"{name} ({facts.expected.function_migrations[name]})"
        for name in missing
        if name in facts.expected.function_migrations
    )
    return (
        f"defined by: {defined}. `presence-sdk migrate` skips files it has recorded, so "
        + rerun_from(shipped[start].name)
    )


def check_report_sections(facts: Facts) -> Iterator[SetupCheck]:
    """The report has every section the checks read (only reported when it has not).

    A report from an older setup-report migration lacks some; the checks that need them
    are then skipped rather than guessed, and this finding says how to get them.
    """
    lacking = [
        label
        for label, present in (
            ("function settings", all("config" in f for f in facts.functions.values())),
            ("grants and policies", isinstance(facts.raw.get("relations"), Mapping)),
            (
                "presence column grants",
                facts.users_table is None or "writable_presence_columns" in facts.users_table,
            ),
            ("sign-up trigger", isinstance(facts.raw.get("signup_trigger"), Mapping)),
            ("run history", "run_history" in facts.raw),
        )
        if not present
    ]
    if lacking:
        yield failed(
            "schema.report",
            "the database's presence_setup_report() is older than this package and lacks: "
            f"{', '.join(lacking)}; the checks that need them were skipped (a setup made "
            "by an older presence-sdk, e.g. 0.1.0, that has not been migrated since)",
            "apply the pending presence migrations (they bring the whole setup up to date, "
            f"not only the report; {facts.expected.report_migration} defines it): "
            f"{MIGRATE_CMD}. If you apply the SQL by hand instead, run every migration "
            "again, in order: `presence-sdk sql --no-schema | psql <DATABASE_URL>`",
        )


def check_users_table(facts: Facts) -> Iterator[SetupCheck]:
    """public.users exists with the presence columns."""
    if facts.users_table is None:
        yield failed(
            "users_table",
            "public.users does not exist",
            "create it from schema.sql (`presence-sdk migrate --dsn <DATABASE_URL> "
            "--with-schema`, or `presence-sdk sql --file schema`)",
        )
        return
    needed = ("id", "status", "last_heartbeat", "online_since")
    if absent := [c for c in needed if c not in facts.users_columns]:
        yield failed(
            "users_table",
            f"public.users lacks column(s) {', '.join(absent)}",
            "apply the pending presence migrations (20240000000001_add_heartbeat adds "
            f"these columns): {MIGRATE_CMD}. If every migration is already recorded (a "
            "column dropped by hand), migrate skips them: " + rerun_from("add_heartbeat"),
        )
    else:
        yield passed("users_table", "public.users has the presence columns")


def check_settings(facts: Facts) -> Iterator[SetupCheck]:
    """The presence_config row exists and its timings fit together."""
    timeout, sweep = facts.timeout, facts.sweep_setting
    if timeout is None:
        yield failed(
            "settings",
            "public.presence_config has no row: timeout and sweep period are unknown, "
            "heartbeats fail and reads return nothing",
            _RESTORE_SETTINGS,
        )
        return
    beat = get(facts.raw, "settings", "heartbeat_interval_seconds")
    if sweep is not None and sweep > timeout:
        yield failed(
            "settings",
            f"the sweep period ({sweep} s) is longer than the timeout ({timeout} s): stored "
            f"statuses stay online up to {sweep + timeout} s after the last heartbeat",
            "SELECT public.presence_configure(sweep_interval_seconds => "
            f"{facts.suggested_sweep()});",
        )
        return
    yield passed(
        "settings", f"timeout {timeout} s, sweep every {sweep} s, heartbeat every {beat} s"
    )


def check_signup_trigger(facts: Facts) -> Iterator[SetupCheck]:
    """schema.sql's trigger gives every new auth user a profile row (if it is used)."""
    section = facts.raw.get("signup_trigger")
    if not isinstance(section, Mapping):
        return
    if not section.get("function_exists"):
        yield passed(
            "signup_trigger",
            "no public.handle_new_auth_user(): the app creates public.users rows itself "
            "(a heartbeat from a user without one fails with PT404)",
        )
        return
    triggers = [
        t for t in section.get("triggers") or () if isinstance(t, Mapping) and t.get("on_insert")
    ]
    if enabled := [t for t in triggers if t.get("enabled")]:
        yield passed(
            "signup_trigger",
            f"trigger {enabled[0].get('name')} gives every new auth user a public.users row",
        )
    elif triggers:
        name = triggers[0].get("name")
        yield failed(
            "signup_trigger",
            f"trigger {name} on auth.users is DISABLED: users who sign up get no "
            "public.users row, and their first heartbeat fails with PT404",
            f"ALTER TABLE auth.users ENABLE TRIGGER {name}; " + _BACKFILL,
        )
    else:
        yield failed(
            "signup_trigger",
            "no trigger on auth.users runs public.handle_new_auth_user(): users who sign up "
            "get no public.users row, and their first heartbeat fails with PT404",
            "CREATE TRIGGER on_auth_user_created_presence AFTER INSERT ON auth.users "
            "FOR EACH ROW EXECUTE FUNCTION public.handle_new_auth_user(); " + _BACKFILL,
        )
