"""Helpers for the presence privacy tests (migration 20240000000007_privacy).

:func:`observe` reads one target's presence through EVERY read path, exactly as the API
would run each of them for a viewer (PostgREST's role switch + ``request.jwt.claims``):
the view, the RPCs, a direct table read, the event log's visibility seam, and the column
privileges Supabase Realtime applies to ``postgres_changes``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql
from psycopg.rows import dict_row

from presence_sdk.testing import PostgRESTError, PresenceDatabase

REPO = Path(__file__).resolve().parents[2]
FRIENDSHIPS_SQL = REPO / "examples" / "privacy_friendships.sql"

PRESENCE_COLUMNS = ("status", "last_heartbeat", "online_since")

# presence_private function -> (anon, authenticated, service_role) may execute. The
# reads run as the caller and call the first four; the rest are the owner's.
PRIVACY_FUNCTION_GRANTS = {
    "presence_private.viewer_sees_all()": (False, True, True),
    "presence_private.lists_every_user()": (False, True, True),
    "presence_private.contact_check(uuid, uuid)": (False, True, True),
    "presence_private.visible_to(uuid, uuid)": (False, True, True),
    "presence_private.exact_count_max_rows()": (False, True, True),
    "presence_private.can_see_events(uuid, uuid)": (False, True, True),
    "presence_private.set_invisible(uuid[], boolean)": (False, False, False),
    "presence_private.log_mask_edges(uuid[], boolean)": (False, False, False),
    "presence_private.forget_hidden_period()": (False, False, False),
    "presence_private.anyone_restricting()": (False, True, True),
    "presence_private.user_restricting(uuid)": (False, True, True),
    "presence_private.settings_owner(uuid, text)": (False, False, False),
    "presence_private.privacy_of(uuid)": (False, False, False),
    "presence_private.caller_role()": (False, False, False),
}


def claims_for(role: str, user: str | None) -> dict[str, Any]:
    return {"role": role} | ({"sub": user} if user else {})


def as_api(
    db: PresenceDatabase, role: str, user: str | None, statement: str, params: Any = None
) -> list[dict[str, Any]]:
    """Run one statement as PostgREST would for ``role`` (and ``user``); return rows."""
    with db.connect() as conn, conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
        cur.execute(
            "SELECT set_config('request.jwt.claims', %s, true)",
            (json.dumps(claims_for(role, user)),),
        )
        cur.execute(statement, params)
        return cur.fetchall() if cur.description else []


def rpc(
    db: PresenceDatabase, fn: str, params: dict[str, Any] | None, role: str, user: str | None
) -> Any:
    """An RPC as ``role`` (service_role, authenticated with ``user``, or anon)."""
    return db.rpc(fn, params, user_id=user, role=role)


def set_visibility(
    db: PresenceDatabase, user: str, *, presence: str | None = None, last_seen: str | None = None
) -> dict[str, Any]:
    params = {k: v for k, v in (("presence", presence), ("last_seen", last_seen)) if v is not None}
    result: dict[str, Any] = db.rpc("presence_set_visibility", params, user_id=user)
    return result


def set_invisible(db: PresenceDatabase, user: str, invisible: bool) -> dict[str, Any]:
    result: dict[str, Any] = db.rpc(
        "presence_set_invisible", {"invisible": invisible}, user_id=user
    )
    return result


def install_friendships(db: PresenceDatabase, *pairs: tuple[str, str]) -> None:
    """The shipped example hook, with ``(user, friend)`` rows (one direction each)."""
    with db.connect() as conn:
        conn.execute(FRIENDSHIPS_SQL.read_text())
        for user, friend in pairs:
            conn.execute(
                "INSERT INTO public.friendships (user_id, friend_id) VALUES (%s, %s)",
                (user, friend),
            )


@dataclass
class Observation:
    """What one viewer learned about one target, path by path."""

    online: dict[str, bool | None] = field(default_factory=dict)
    last_seen: dict[str, Any] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # path -> SQLSTATE
    statuses: dict[str, int] = field(default_factory=dict)  # path -> HTTP status (RPCs)

    def online_anywhere(self) -> bool:
        return any(v for v in self.online.values())


def _try(obs: Observation, path: str, fn: Any) -> Any:
    try:
        return fn()
    except PostgRESTError as err:
        obs.errors[path] = err.code
        obs.statuses[path] = err.status
    except psycopg.Error as err:
        obs.errors[path] = str(err.sqlstate)
    return None


def observe(db: PresenceDatabase, role: str, viewer: str | None, target: str) -> Observation:
    """Every read path, as ``role``/``viewer``, about ``target``."""
    obs = Observation()

    rows = _try(
        obs,
        "view",
        lambda: as_api(
            db,
            role,
            viewer,
            "SELECT status, online, last_seen, last_heartbeat, online_since "
            "FROM public.user_presence WHERE user_id = %s",
            (target,),
        ),
    )
    if rows is not None:
        row = rows[0] if rows else None
        obs.online["view"] = bool(row and row["online"])
        obs.last_seen["view"] = row and row["last_seen"]
        if row:
            assert row["last_heartbeat"] == row["last_seen"], row
            assert (row["status"] != "offline") == row["online"], row
            assert (row["online_since"] is not None) <= row["online"], row

    got = _try(obs, "get", lambda: rpc(db, "presence_get", {"user_ids": [target]}, role, viewer))
    if got is not None:
        row = got[0] if got else None
        obs.online["get"] = bool(row and row["online"])
        obs.last_seen["get"] = row and row["last_seen"]
        if row:
            assert (row["status"] != "offline") == row["online"], row

    answer = _try(
        obs, "is_online", lambda: rpc(db, "presence_is_online", {"user_id": target}, role, viewer)
    )
    if answer is not None:
        obs.online["is_online"] = answer

    listed = _try(
        obs,
        "list_online",
        lambda: rpc(db, "presence_list_online", {"page_size": 1000}, role, viewer),
    )
    if listed is not None:
        obs.online["list_online"] = target in {r["user_id"] for r in listed}

    counts = _try(obs, "counts", lambda: rpc(db, "presence_counts", {}, role, viewer))
    if counts is not None:
        obs.online["counts"] = counts["online"] + counts["away"] + counts["busy"] > 0

    direct = _try(
        obs,
        "table",
        lambda: as_api(
            db,
            role,
            viewer,
            # The statement PostgREST builds for GET /rest/v1/users?select=status,
            # last_heartbeat&id=eq.<target>.
            'WITH pgrst_source AS (SELECT "public"."users"."status", '
            '"public"."users"."last_heartbeat" FROM "public"."users" '
            'WHERE "public"."users"."id" = %s) '
            "SELECT coalesce(json_agg(_postgrest_t), '[]') AS body "
            "FROM (SELECT * FROM pgrst_source) AS _postgrest_t",
            (target,),
        ),
    )
    if direct is not None:
        body = direct[0]["body"]
        obs.online["table"] = bool(body) and body[0]["status"] != "offline"
        obs.last_seen["table"] = body[0]["last_heartbeat"] if body else None

    seam = _try(
        obs,
        "events",
        lambda: as_api(
            db,
            role,
            viewer,
            # As the RLS policy of public.presence_events calls it.
            "SELECT presence_private.can_see_events((SELECT auth.uid()), %s) AS ok",
            (target,),
        ),
    )
    if seam is not None:
        obs.online["events"] = bool(seam[0]["ok"])
    return obs


def realtime_columns(db: PresenceDatabase, role: str) -> list[str]:
    """The columns of public.users Realtime sends a subscriber of ``role``: those
    ``realtime.apply_rls`` finds selectable with has_column_privilege (supabase/realtime,
    migration 20260709120000_fix_apply_rls_filter_role_leak), and the only ones its
    subscription_check_filters accepts in a filter."""
    rows = db.query(
        "SELECT a.attname FROM pg_attribute AS a "
        "WHERE a.attrelid = 'public.users'::regclass AND a.attnum > 0 AND NOT a.attisdropped "
        "AND has_column_privilege(%s, a.attrelid, a.attname, 'SELECT') ORDER BY a.attnum",
        (role,),
    )
    return [r["attname"] for r in rows]


def privacy_rows(db: PresenceDatabase) -> list[dict[str, Any]]:
    return db.query("SELECT * FROM public.presence_privacy ORDER BY user_id")
