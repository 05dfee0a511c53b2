"""verify_setup() checks of presence sessions and the event log (migrations 5 and 6).

Each function takes the :class:`~presence_sdk._verify_facts.Facts` of one setup report
and yields its findings; :data:`presence_sdk._verify.CHECKS` lists them in order. A
report without a ``relations`` section (0.1.0's) yields nothing here: ``schema.report``
names it once. A report that has one but does not describe the sessions or the log
comes from an older version of the presence SQL: the fix is to migrate.
"""

from __future__ import annotations

from collections.abc import Iterator

from presence_sdk._models import SetupCheck
from presence_sdk._verify_facts import MIGRATE_CMD, Facts, failed, passed, rerun_from

__all__ = [
    "check_event_triggers",
    "check_events",
    "check_sessions",
    "check_tables_rls",
]

#: What the database lacks without the sessions migration, and without the events one.
_SESSIONS = (
    "presence per connection (public.presence_sessions, several devices per user, the "
    "trackers' batch RPCs)"
)
_EVENTS = "event log (public.presence_events: watch() and the history reads)"
_OLDER = "older version of the presence SQL: apply the newer migrations: " + MIGRATE_CMD


def check_sessions(facts: Facts) -> Iterator[SetupCheck]:
    """public.presence_sessions and schema presence_private exist."""
    described = facts.has_relation_entry("presence_sessions")
    if described is None:
        return
    if not described:
        yield failed("schema.sessions", f"the database has no {_SESSIONS}", _OLDER)
        return
    missing = []
    if facts.relation("presence_sessions") is None:
        missing.append("public.presence_sessions")
    if facts.private_schema is not None and not facts.private_schema.get("exists"):
        missing.append("schema presence_private")
    if missing:
        yield failed(
            "schema.sessions",
            f"{' and '.join(missing)} missing: beats, leaves and the presence reads fail",
            rerun_from("sessions"),
        )
    else:
        yield passed("schema.sessions", "presence sessions are installed")


def check_events(facts: Facts) -> Iterator[SetupCheck]:
    """public.presence_events exists."""
    described = facts.has_relation_entry("presence_events")
    if described is None:
        return
    if not described:
        yield failed("schema.events", f"the database has no {_EVENTS}", _OLDER)
    elif facts.relation("presence_events") is None:
        yield failed(
            "schema.events",
            "public.presence_events is missing: its triggers fail, and with them every "
            "beat that starts or ends a session",
            rerun_from("events"),
        )
    else:
        yield passed("schema.events", "the presence event log is installed")


#: What each trigger of the log records.
_LOGS = {
    "presence_events_session_insert": "sessions starting",
    "presence_events_session_delete": "sessions ending (leave, timeout, evicted)",
    "presence_events_session_update": "session status changes and timed-out sessions coming back",
    "presence_events_user_update": "users going online or offline and their status changes",
}


def check_event_triggers(facts: Facts) -> Iterator[SetupCheck]:
    """The triggers that write the event log exist and are enabled."""
    triggers = facts.event_triggers
    if triggers is None or facts.relation("presence_events") is None:
        return
    problems: list[str] = []
    fixes: list[str] = []
    for trigger in triggers:
        name, table = str(trigger.get("name")), str(trigger.get("table"))
        what = _LOGS.get(name, "transitions")
        if not trigger.get("exists"):
            problems.append(f"{name} on {table} is missing (no events for {what})")
            statement = facts.expected.triggers.get(name)
            fixes.append(
                statement or rerun_from(facts.expected.trigger_migrations.get(name, "events"))
            )
        elif not trigger.get("enabled"):
            problems.append(f"{name} on {table} is DISABLED (no events for {what})")
            fixes.append(f"ALTER TABLE {table} ENABLE TRIGGER {name};")
    if problems:
        yield failed(
            "events.triggers",
            "the event log misses transitions: " + "; ".join(problems) + ". watch(), "
            "presence_events_since() and the history reads never see them, and nothing "
            "can recover them later",
            " ".join(fixes),
        )
    else:
        yield passed("events.triggers", f"all {len(triggers)} triggers of the event log are on")


#: Who could read what with row level security off (the API roles hold SELECT).
_RLS_OFF = {
    "presence_sessions": "every signed-in user can read every user's sessions (devices, "
    "metadata) through the REST API",
    "presence_events": "every signed-in user can read every user's presence history "
    "(sessions, devices), whatever presence_private.can_see_events() says",
}


def check_tables_rls(facts: Facts) -> Iterator[SetupCheck]:
    """Row level security is enabled on public.presence_sessions and presence_events."""
    for table, exposure in _RLS_OFF.items():
        relation = facts.relation(table)
        if relation is None:
            continue
        name = f"security.rls.{table}"
        if relation.get("rls_enabled"):
            yield passed(name, f"row level security is enabled on public.{table}")
        else:
            yield failed(
                name,
                f"row level security is DISABLED on public.{table}: {exposure}",
                f"ALTER TABLE public.{table} ENABLE ROW LEVEL SECURITY;",
            )
