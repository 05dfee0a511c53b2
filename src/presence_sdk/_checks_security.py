"""verify_setup() checks of security: RLS, function grants, search_path, table grants, policies.

Each function takes the :class:`~presence_sdk._verify_facts.Facts` of one setup report
and yields its findings; :data:`presence_sdk._verify.CHECKS` lists them in order. A
check whose data is missing from the report (an older report) yields nothing:
``schema.report`` says so once.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from presence_sdk._models import SetupCheck
from presence_sdk._verify_facts import (
    ANON_FUNCTIONS,
    BATCH_FUNCTIONS,
    CLIENT_FUNCTIONS,
    PRIVILEGED_FUNCTIONS,
    SERVICE_FUNCTIONS,
    Facts,
    failed,
    get,
    passed,
)

__all__ = [
    "check_anon_api",
    "check_client_api",
    "check_policies",
    "check_presence_columns",
    "check_privileged_functions",
    "check_reads",
    "check_rls",
    "check_search_path",
    "check_writes",
]

#: Presence columns clients must not write directly, per privilege. Inserting a status
#: is harmless (without a heartbeat it reads offline and the sweep clears it), and apps
#: that insert their own profile rows may set it.
PROTECTED_COLUMNS = {
    "UPDATE": ("status", "last_heartbeat", "online_since"),
    "INSERT": ("last_heartbeat", "online_since"),
}
#: Who must be able to SELECT what for the reads (which run with the caller's rights).
#: Not public.users for authenticated: since migration 20240000000007_privacy the API
#: roles may only select its non-presence columns (the reads need its id), and table
#: privileges cannot tell that apart from no access at all.
_READS = (
    ("user_presence", "authenticated", "the presence reads"),
    (
        "presence_config",
        "authenticated",
        "presence_settings() (and, on databases without sessions, the presence reads)",
    ),
    ("presence_config", "anon", "presence_settings() before sign-in"),
    ("users", "service_role", "server-side presence reads"),
    ("user_presence", "service_role", "server-side presence reads"),
    ("presence_config", "service_role", "server-side presence reads"),
    ("presence_sessions", "authenticated", "presence_my_sessions() (a user's own devices)"),
    ("presence_events", "authenticated", "presence_events_since(), watch() and the history"),
    ("presence_events", "service_role", "watch() and the history with the service key"),
)
#: Roles that must be able to use schema presence_private (several reads name its
#: helpers and run with the caller's rights).
_PRIVATE_USERS = ("authenticated", "service_role")
#: What a client could do with write privileges on each relation (TRUNCATE, for one,
#: ignores row level security).
_WRITES = {
    "presence_config": "TRUNCATE or change the timings, which change only through "
    "presence_configure()",
    "user_presence": "write through the view",
    "presence_sessions": "forge or wipe anyone's sessions, which change only through "
    "the presence functions",
    "presence_events": "forge or erase presence history, which only the log's triggers write",
}
_WRITE_PRIVILEGES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
_SAFE_SEARCH_PATH = 'search_path=""'


def check_rls(facts: Facts) -> Iterator[SetupCheck]:
    """Row level security is enabled on public.users."""
    if facts.users_table is None:
        return
    if facts.users_table.get("rls_enabled"):
        yield passed("security.rls", "row level security is enabled on public.users")
    else:
        yield failed(
            "security.rls",
            "row level security is DISABLED on public.users: every API role can "
            "read and write all rows its grants allow",
            "ALTER TABLE public.users ENABLE ROW LEVEL SECURITY;",
        )


def check_privileged_functions(facts: Facts) -> Iterator[SetupCheck]:
    """The sweep, report, configure, schedule and prune functions are not for clients."""
    for name in PRIVILEGED_FUNCTIONS:
        if facts.function(name) is None:
            continue
        exposed = [role for role in ("anon", "authenticated") if facts.can_execute(name, role)]
        check = f"security.{name}"
        batch = name in BATCH_FUNCTIONS
        if exposed:
            yield failed(
                check,
                f"{name} is executable by {' and '.join(exposed)}: anyone with the "
                "public API key can call it through the REST API"
                + (" and beat or end the sessions of any user" if batch else ""),
                f"REVOKE EXECUTE ON FUNCTION {facts.signature(name)} "
                "FROM PUBLIC, anon, authenticated;"
                + (
                    f" GRANT EXECUTE ON FUNCTION {facts.signature(name)} TO service_role;"
                    if batch and not facts.can_execute(name, "service_role")
                    else ""
                ),
            )
        elif name in SERVICE_FUNCTIONS and not facts.can_execute(name, "service_role"):
            yield failed(
                check,
                f"{name} is not executable by service_role"
                + (": the trackers' batches fail with permission denied" if batch else ""),
                f"GRANT EXECUTE ON FUNCTION {facts.signature(name)} TO service_role;",
            )
        else:
            yield passed(check, f"{name} is not executable by anon or authenticated")


def check_client_api(facts: Facts) -> Iterator[SetupCheck]:
    """Signed-in users can call the heartbeat and read RPCs."""
    denied = [
        name
        for name in CLIENT_FUNCTIONS
        if facts.function(name) is not None and not facts.can_execute(name, "authenticated")
    ]
    if denied:
        yield failed(
            "security.client_api",
            f"signed-in users (authenticated) cannot execute {', '.join(denied)}: "
            "the presence clients will get permission errors",
            "GRANT EXECUTE ON FUNCTION "
            + ", ".join(facts.signature(n) for n in denied)
            + " TO authenticated;",
        )
    else:
        yield passed("security.client_api", "signed-in users can call the presence API")


def check_anon_api(facts: Facts) -> Iterator[SetupCheck]:
    """anon (no user) may read the timings, and nothing else of the presence API."""
    exposed = [
        name
        for name in CLIENT_FUNCTIONS
        if name not in ANON_FUNCTIONS and facts.can_execute(name, "anon")
    ]
    if exposed:
        signatures = ", ".join(facts.signature(n) for n in exposed)
        yield failed(
            "security.anon_api",
            f"anon (the public API key, no user) can execute {', '.join(exposed)}: the calls "
            "only fail inside (not authenticated, permission denied), but least privilege "
            "says anon should not reach per-user functions at all",
            f"REVOKE EXECUTE ON FUNCTION {signatures} FROM PUBLIC, anon; "
            f"GRANT EXECUTE ON FUNCTION {signatures} TO authenticated, service_role;",
        )
    elif any(facts.function(n) is not None for n in CLIENT_FUNCTIONS):
        yield passed("security.anon_api", "anon can only read the timings (presence_settings)")


def _definer_functions(facts: Facts) -> Iterator[tuple[str, str, object]]:
    """(name, signature, proconfig) of the SECURITY DEFINER functions in the report."""
    for name, fn in sorted(facts.functions.items()):
        if fn.get("exists") and fn.get("security_definer") and "config" in fn:
            yield name, facts.signature(name), fn.get("config")
    for fn in facts.private_functions:  # presence_private (sessions, the event log)
        signature = str(fn.get("name"))
        if fn.get("security_definer"):
            yield signature.split("(", 1)[0], signature, fn.get("config")
    trigger = facts.raw.get("signup_trigger")
    if (
        isinstance(trigger, Mapping)
        and trigger.get("function_exists")
        and trigger.get("function_security_definer")
    ):
        yield (
            "handle_new_auth_user",
            "public.handle_new_auth_user()",
            trigger.get("function_config"),
        )


def check_search_path(facts: Facts) -> Iterator[SetupCheck]:
    """Every SECURITY DEFINER function pins ``search_path = ''``."""
    definers = list(_definer_functions(facts))
    if not definers:
        return
    unsafe = [
        (name, signature)
        for name, signature, config in definers
        if not (isinstance(config, list) and _SAFE_SEARCH_PATH in config)
    ]
    if unsafe:
        yield failed(
            "security.search_path",
            f"SECURITY DEFINER function(s) without search_path = '': "
            f"{', '.join(n for n, _ in unsafe)}. They run with their owner's rights; "
            "without a pinned search_path, objects a caller creates (in a schema searched "
            "first, e.g. pg_temp) can stand in for the ones the function uses",
            " ".join(f"ALTER FUNCTION {sig} SET search_path = '';" for _, sig in unsafe),
        )
    else:
        yield passed(
            "security.search_path",
            f"all {len(definers)} SECURITY DEFINER functions pin search_path = ''",
        )


def _ident(name: str) -> str:
    """An SQL identifier as PostgreSQL's quote_ident() would write it."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def check_presence_columns(facts: Facts) -> Iterator[SetupCheck]:
    """Clients cannot write presence columns of public.users except through the RPCs."""
    writable = get(facts.users_table, "writable_presence_columns")
    if not isinstance(writable, Mapping):
        return
    found: list[str] = []
    fixes: list[str] = []
    for role in ("anon", "authenticated"):
        for privilege, protected in PROTECTED_COLUMNS.items():
            columns = [c for c in get(writable, role, privilege) or () if c in protected]
            if not columns:
                continue
            found.append(f"{role} can {privilege} {', '.join(columns)}")
            if privilege in (facts.privileges("users", role) or ()):
                others = [_ident(c) for c in facts.users_columns if c not in protected]
                fixes.append(f"REVOKE {privilege} ON TABLE public.users FROM {role};")
                if others:
                    fixes.append(
                        f"GRANT {privilege} ({', '.join(others)}) ON TABLE public.users TO {role};"
                    )
            else:
                fixes.append(
                    f"REVOKE {privilege} ({', '.join(columns)}) ON TABLE public.users FROM {role};"
                )
    if found:
        yield failed(
            "security.presence_columns",
            f"{'; '.join(found)} of public.users directly, not only through the presence "
            "functions: a user can forge their own presence, e.g. "
            "last_heartbeat = 'infinity' (online forever, never swept)",
            " ".join(fixes)
            + " (the grants keep the app's own columns writable; also revoke from PUBLIC "
            "if it holds these privileges)",
        )
    else:
        yield passed(
            "security.presence_columns",
            "clients write presence columns only through the presence functions",
        )


def check_reads(facts: Facts) -> Iterator[SetupCheck]:
    """The API roles can SELECT what the reads use."""
    if not isinstance(facts.raw.get("relations"), Mapping):
        return
    missing: dict[str, list[str]] = {}
    broken: list[str] = []
    for relation, role, what in _READS:
        privileges = facts.privileges(relation, role)
        if privileges is None or "SELECT" in privileges:
            continue  # no such role (plain PostgreSQL), no such relation, or fine
        missing.setdefault(relation, []).append(role)
        broken.append(f"{role} cannot SELECT public.{relation} ({what} fail)")
    usage = get(facts.private_schema, "usage")
    no_usage = [
        role
        for role in _PRIVATE_USERS
        if isinstance(usage, Mapping) and role in usage and not usage[role]
    ]
    if no_usage:
        broken.append(
            f"{' and '.join(no_usage)} cannot use schema presence_private "
            "(presence_counts(), presence_list_online(), presence_my_sessions(), the event "
            "and history reads call its helpers by name: they fail)"
        )
    if missing or no_usage:
        yield failed(
            "security.reads",
            "; ".join(broken) + ": permission denied",
            " ".join(
                [
                    *(
                        f"GRANT SELECT ON TABLE public.{relation} TO {', '.join(roles)};"
                        for relation, roles in missing.items()
                    ),
                    *(
                        [f"GRANT USAGE ON SCHEMA presence_private TO {', '.join(no_usage)};"]
                        if no_usage
                        else []
                    ),
                ]
            ),
        )
    else:
        yield passed("security.reads", "the API roles can read what presence reads use")


def check_writes(facts: Facts) -> Iterator[SetupCheck]:
    """anon and authenticated cannot change the timings, the view, sessions or the log."""
    if not isinstance(facts.raw.get("relations"), Mapping):
        return
    found: list[str] = []
    fixes: list[str] = []
    for relation, harm in _WRITES.items():
        roles = [
            role
            for role in ("anon", "authenticated")
            if set(facts.privileges(relation, role) or ()) & set(_WRITE_PRIVILEGES)
        ]
        if roles:
            found.append(f"{' and '.join(roles)} may change public.{relation} ({harm})")
            fixes.append(
                f"REVOKE {', '.join(_WRITE_PRIVILEGES)} ON TABLE public.{relation} "
                f"FROM PUBLIC, {', '.join(roles)};"
            )
    if found:
        yield failed(
            "security.writes",
            "; ".join(found) + ": row level security does not stop TRUNCATE, and the "
            "presence functions are the only writers",
            " ".join(fixes),
        )
    else:
        yield passed(
            "security.writes",
            "the API roles can only read the timings, the view, sessions and the log",
        )


def _readable_by(policies: list[Mapping[str, Any]], role: str) -> bool:
    """Some permissive policy lets ``role`` SELECT rows."""
    for policy in policies:
        roles = policy.get("roles")
        if (
            policy.get("permissive")
            and policy.get("command") in ("SELECT", "ALL")
            and isinstance(roles, list)
            and ("public" in roles or role in roles)
        ):
            return True
    return False


def check_policies(facts: Facts) -> Iterator[SetupCheck]:
    """Row level security lets readers see rows of public.users and presence_config."""
    if not isinstance(facts.raw.get("relations"), Mapping):
        return
    problems: list[str] = []
    fixes: list[str] = []
    users = facts.relation("users")
    if (
        users is not None
        and users.get("rls_enabled")
        and not _readable_by(facts.policies("users"), "authenticated")
    ):
        problems.append(
            "no policy lets signed-in users (authenticated) read public.users: every "
            "presence read returns nothing"
        )
        fixes.append(
            "CREATE POLICY users_select_authenticated ON public.users FOR SELECT "
            "TO authenticated USING (true); (or a policy of your own saying whom each "
            "user may see)"
        )
    config = facts.relation("presence_config")
    if config is not None and config.get("rls_enabled"):
        blind = [
            role
            for role in ("anon", "authenticated")
            if facts.privileges("presence_config", role) is not None
            and not _readable_by(facts.policies("presence_config"), role)
        ]
        if blind:
            problems.append(
                f"no policy lets {' and '.join(blind)} read public.presence_config: "
                "presence_settings() returns null (and, on databases without sessions, "
                "reads find no timeout and return nothing)"
            )
            fixes.append(
                "DROP POLICY IF EXISTS presence_config_read ON public.presence_config; "
                "CREATE POLICY presence_config_read ON public.presence_config FOR SELECT "
                "TO anon, authenticated, service_role USING (true);"
            )
    if problems:
        yield failed("security.policies", "; ".join(problems), " ".join(fixes))
    elif users is not None or config is not None:
        yield passed("security.policies", "row level security lets readers see presence rows")
