"""verify_setup() checks of presence privacy (migration 7).

Each function takes the :class:`~presence_sdk._verify_facts.Facts` of one setup report
and yields its findings; :data:`presence_sdk._verify.CHECKS` lists them in order. A
report without a ``relations`` section (0.1.0's) yields nothing here: ``schema.report``
names it once. A report that has one but no ``privacy`` section comes from an older
version of the presence SQL (migration 6 or before): the fix is to migrate.

The privacy RPCs themselves are judged with the other functions (``schema.functions``,
``security.client_api``, ``security.anon_api``, ``security.presence_set_invisible_for``).
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from typing import Any

from presence_sdk._models import SetupCheck
from presence_sdk._verify_facts import MIGRATE_CMD, Facts, failed, get, passed, rerun_from

__all__ = [
    "HIDDEN_COLUMNS",
    "check_column_reads",
    "check_hook",
    "check_privacy",
    "check_privacy_internals",
    "check_privacy_table",
    "check_realtime",
]

#: The presence columns of public.users that the API roles may not SELECT directly:
#: only the view and the RPCs, which apply each user's settings, show them.
HIDDEN_COLUMNS = ("status", "last_heartbeat", "online_since")
_HOOK = "public.presence_can_see(uuid, uuid)"
_SETTINGS_TABLE = "presence_privacy"
#: The internals every read path goes through (regprocedure text or relation name).
_INTERNALS = (
    "presence_private.anyone_restricting()",
    "presence_private.contact_check(uuid, uuid)",
    "presence_private.lists_every_user()",
    "presence_private.live_session_rank",
    "presence_private.privacy_of(uuid)",
    "presence_private.privacy_settings",
    "presence_private.forget_hidden_period()",
    "presence_private.set_invisible(uuid[], boolean)",
    "presence_private.settings_owner(uuid, text)",
    "presence_private.stored_presence",
    "presence_private.stored_presence_now",
    "presence_private.user_presence_all_rows",
    "presence_private.user_restricting(uuid)",
    "presence_private.viewer_sees_all()",
    "presence_private.visible_to(uuid, uuid)",
)
#: Internals the reads call with the caller's rights: the signed-in users and the
#: service role must execute them (or every read fails with permission denied).
_READ_HELPERS = (
    "presence_private.anyone_restricting()",
    "presence_private.contact_check(uuid,uuid)",
    "presence_private.lists_every_user()",
    "presence_private.user_restricting(uuid)",
    "presence_private.viewer_sees_all()",
    "presence_private.visible_to(uuid,uuid)",
)
#: Internals only the settings RPCs (owner rights) call: set_invisible writes anyone's
#: invisible mode, settings_owner and privacy_of act for any user.
_WRITERS = (
    "presence_private.forget_hidden_period()",
    "presence_private.privacy_of(uuid)",
    "presence_private.set_invisible(uuid[],boolean)",
    "presence_private.settings_owner(uuid,text)",
)
_SETTINGS_WRITES = ("INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER")
_NO_PRIVACY = (
    "presence privacy (invisible mode; who may see presence and last seen; "
    "public.presence_privacy): every signed-in user reads every user's presence and "
    "last seen"
)


def _section(facts: Facts) -> Mapping[str, Any] | None:
    """The privacy section of an installed privacy migration (None otherwise)."""
    privacy = facts.privacy
    return privacy if privacy is not None and privacy.get("installed") else None


def check_privacy(facts: Facts) -> Iterator[SetupCheck]:
    """Migration 7 is installed: public.presence_privacy and its internals exist."""
    if facts.has_relation_entry("users") is None:
        return  # 0.1.0's report: schema.report says so
    privacy = facts.privacy
    if privacy is None:
        yield failed(
            "schema.privacy",
            f"the database has no {_NO_PRIVACY}",
            "older version of the presence SQL: apply the newer migrations: " + MIGRATE_CMD,
        )
        return
    objects = privacy.get("objects")
    missing = [] if privacy.get("installed") else [f"public.{_SETTINGS_TABLE}"]
    if isinstance(objects, Mapping):
        missing += [name for name in _INTERNALS if objects.get(name) is False]
    if missing:
        yield failed(
            "schema.privacy",
            f"{', '.join(missing)} missing: the privacy settings RPCs and every presence "
            "read that applies them fail",
            rerun_from("privacy"),
        )
    else:
        yield passed("schema.privacy", "presence privacy is installed")


def check_privacy_table(facts: Facts) -> Iterator[SetupCheck]:
    """public.presence_privacy has row level security, and no API role may write it."""
    if _section(facts) is None or (relation := facts.relation(_SETTINGS_TABLE)) is None:
        return
    problems: list[str] = []
    fixes: list[str] = []
    if not relation.get("rls_enabled"):
        problems.append(
            "row level security is DISABLED on public.presence_privacy: every signed-in "
            "user reads everyone's settings (who is invisible, since when)"
        )
        fixes.append(f"ALTER TABLE public.{_SETTINGS_TABLE} ENABLE ROW LEVEL SECURITY;")
    writers = [
        role
        for role in ("anon", "authenticated", "service_role")
        if set(facts.privileges(_SETTINGS_TABLE, role) or ()) & set(_SETTINGS_WRITES)
    ]
    if writers:
        problems.append(
            f"{' and '.join(writers)} may write public.presence_privacy directly: settings "
            "change only through the privacy RPCs, which validate them (TRUNCATE would "
            "make every invisible user visible at once)"
        )
        fixes.append(
            f"REVOKE {', '.join(_SETTINGS_WRITES)} ON TABLE public.{_SETTINGS_TABLE} "
            f"FROM PUBLIC, {', '.join(writers)};"
        )
    if problems:
        yield failed("security.privacy_settings", "; ".join(problems), " ".join(fixes))
    else:
        yield passed(
            "security.privacy_settings",
            "public.presence_privacy: row level security on, written only by the RPCs",
        )


def check_hook(facts: Facts) -> Iterator[SetupCheck]:
    """The app's hook public.presence_can_see exists and the API roles cannot run it."""
    if (privacy := _section(facts)) is None or not isinstance(hook := privacy.get("hook"), Mapping):
        return
    if not hook.get("exists"):
        yield failed(
            "privacy.hook",
            f"{_HOOK} is missing: nobody counts as anyone's contact, so users who show "
            "their presence or last seen to 'contacts' show it to nobody (fail closed; "
            "the server log says why on every read)",
            "create your own rule (docs/privacy.md), or the default (everyone is a "
            f"contact): CREATE FUNCTION {_HOOK.replace('(uuid, uuid)', '')}(viewer uuid, "
            "target uuid) RETURNS boolean LANGUAGE sql STABLE SET search_path = '' AS "
            f"'SELECT true'; REVOKE ALL ON FUNCTION {_HOOK} FROM PUBLIC, anon, "
            "authenticated, service_role;",
        )
        return
    problems: list[str] = []
    fixes: list[str] = []
    exposed = [r for r in ("anon", "authenticated") if get(hook, "execute", r)]
    if exposed:
        problems.append(
            f"{_HOOK} is executable by {' and '.join(exposed)}: anyone with the API key "
            "can ask who is a contact of whom (the reads call it with the owner's rights "
            "through presence_private.contact_check; clients never need to)"
        )
        fixes.append(f"REVOKE ALL ON FUNCTION {_HOOK} FROM PUBLIC, anon, authenticated;")
    config = hook.get("config")
    if hook.get("security_definer") and not (
        isinstance(config, list) and 'search_path=""' in config
    ):
        problems.append(
            f"{_HOOK} is SECURITY DEFINER without search_path = '': objects a caller "
            "creates can stand in for the ones it uses"
        )
        fixes.append(f"ALTER FUNCTION {_HOOK} SET search_path = '';")
    if problems:
        yield failed("privacy.hook", "; ".join(problems), " ".join(fixes))
    else:
        rule = "the default (everyone is a contact)" if hook.get("is_default") else "the app's"
        yield passed("privacy.hook", f"{_HOOK} is {rule}, and clients cannot call it")


def check_privacy_internals(facts: Facts) -> Iterator[SetupCheck]:
    """The reads can run the visibility rule; the API roles cannot run the writers."""
    if _section(facts) is None:
        return
    functions = {str(f.get("name")): f for f in facts.private_functions}
    problems: list[str] = []
    fixes: list[str] = []
    for name in _WRITERS:
        exposed = [r for r in ("anon", "authenticated") if get(functions.get(name), "execute", r)]
        if exposed:
            problems.append(
                f"{name} is executable by {' and '.join(exposed)} (it acts for any user, "
                "with the owner's rights)"
            )
            fixes.append(f"REVOKE ALL ON FUNCTION {name} FROM PUBLIC, anon, authenticated;")
    blocked: dict[str, list[str]] = {}
    for name in _READ_HELPERS:
        execute = get(functions.get(name), "execute")
        if not isinstance(execute, Mapping):
            continue  # missing: schema.privacy names it
        if execute.get("anon"):
            problems.append(f"{name} is executable by anon (the reads are for signed-in users)")
            fixes.append(f"REVOKE ALL ON FUNCTION {name} FROM PUBLIC, anon;")
        for role in ("authenticated", "service_role"):
            if role in execute and not execute[role]:
                blocked.setdefault(role, []).append(name)
    for role, names in blocked.items():
        problems.append(
            f"{role} cannot execute {', '.join(names)}: every presence read as {role} "
            "fails with permission denied"
        )
        fixes.append(f"GRANT EXECUTE ON FUNCTION {', '.join(names)} TO {role};")
    if problems:
        yield failed("security.privacy_internals", "; ".join(problems), " ".join(fixes))
    else:
        yield passed(
            "security.privacy_internals",
            "the reads can apply the visibility rule; only the settings RPCs can change it",
        )


def _ident(name: str) -> str:
    """An SQL identifier as PostgreSQL's quote_ident() would write it."""
    if re.fullmatch(r"[a-z_][a-z0-9_$]*", name):
        return name
    return '"' + name.replace('"', '""') + '"'


def check_column_reads(facts: Facts) -> Iterator[SetupCheck]:
    """anon, authenticated and PUBLIC cannot SELECT the presence columns of public.users."""
    if (privacy := _section(facts)) is None:
        return
    readable = privacy.get("readable_presence_columns")
    grants = privacy.get("select_grants")
    if not isinstance(readable, Mapping) or not isinstance(grants, Mapping):
        return
    found: list[str] = []
    fixes: list[str] = []
    others = ", ".join(_ident(c) for c in facts.users_columns if c not in HIDDEN_COLUMNS)
    for grantee in ("PUBLIC", "anon", "authenticated"):
        grant = grants.get(grantee)
        if not isinstance(grant, Mapping):
            continue
        columns = [c for c in grant.get("columns") or () if c in HIDDEN_COLUMNS]
        if grant.get("table"):
            found.append(f"{grantee} holds SELECT on the whole table")
            fixes.append(f"REVOKE SELECT ON TABLE public.users FROM {grantee};")
            if others:
                fixes.append(f"GRANT SELECT ({others}) ON TABLE public.users TO {grantee};")
        elif columns:
            found.append(f"{grantee} holds SELECT on {', '.join(columns)}")
            fixes.append(
                f"REVOKE SELECT ({', '.join(columns)}) ON TABLE public.users FROM {grantee};"
            )
    for role in ("anon", "authenticated"):
        columns = [c for c in readable.get(role) or () if c in HIDDEN_COLUMNS]
        if columns and not found:  # through a role it is a member of
            found.append(f"{role} can SELECT {', '.join(columns)} (through a role it belongs to)")
            fixes.append(
                f"revoke SELECT on public.users ({', '.join(columns)}) from the roles "
                f"{role} is a member of (\\du {role} in psql lists them)"
            )
    if found:
        yield failed(
            "security.presence_column_reads",
            f"{'; '.join(found)} of public.users: any signed-in user can read every "
            "user's status and last heartbeat directly (GET /rest/v1/users?select=status,"
            "last_heartbeat), whatever their privacy settings (invisible, 'nobody')",
            " ".join(fixes) + " (the grants keep the app's own columns readable; columns "
            "added later need their own GRANT SELECT)",
        )
    else:
        yield passed(
            "security.presence_column_reads",
            "the API roles read presence only through the view and the RPCs (they apply "
            "each user's privacy settings)",
        )


def check_realtime(facts: Facts) -> Iterator[SetupCheck]:
    """public.users is not in the supabase_realtime publication (a privacy warning)."""
    if (privacy := _section(facts)) is None or "users_in_realtime" not in privacy:
        return
    if privacy.get("users_in_realtime"):
        yield failed(
            "privacy.realtime",
            "public.users is in the supabase_realtime publication: subscribers "
            "get no presence columns, but every update of a user's row reaches them when "
            "it happens, and those times follow the user's presence transitions "
            "(online, offline), whatever their privacy settings (invisible, 'nobody')",
            "subscribe to public.presence_events instead (its policy applies the privacy "
            "settings) and remove the table: ALTER PUBLICATION supabase_realtime DROP "
            "TABLE public.users; (if the app streams its own columns of public.users, "
            "keep it knowingly: see docs/security.md)",
            warning=True,
        )
    else:
        yield passed("privacy.realtime", "public.users is not published to Realtime")
