"""Run SQL exactly as PostgREST would, and serve supabase-py's RPC calls from it.

PostgREST runs every request in one transaction: it switches to the role named by
the JWT (``SET LOCAL ROLE``), publishes the claims in the ``request.jwt.claims`` GUC
(which ``auth.uid()`` reads), calls the function with named arguments decoded from
the JSON body, and turns PostgreSQL errors into JSON errors with an HTTP status.
:func:`call_rpc` does the same over a psycopg connection; :class:`PostgRESTEmulator`
wraps it as an httpx/respx handler so real supabase-py clients can talk to the test
database end to end.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
import psycopg
from psycopg import sql
from psycopg.rows import tuple_row

from presence_sdk.testing._jwt import (
    DEFAULT_JWT_SECRET,
    JWTError,
    decode_jwt,
    make_token,
)

__all__ = ["PostgRESTEmulator", "PostgRESTError", "call_rpc", "http_status_for"]

_API_ROLES = frozenset({"anon", "authenticated", "service_role"})
_RPC_PATH = re.compile(r"^/rest/v1/rpc/(?P<fn>[A-Za-z_][A-Za-z0-9_]*)$")


@dataclass(frozen=True)
class PostgRESTError(Exception):
    """An error as PostgREST returns it: HTTP status plus the JSON body fields."""

    status: int
    code: str
    message: str
    details: str | None = None
    hint: str | None = None

    def body(self) -> dict[str, Any]:
        """The JSON body PostgREST sends for this error."""
        return {
            "code": self.code,
            "message": self.message,
            "details": self.details,
            "hint": self.hint,
        }

    def __str__(self) -> str:
        return f"{self.status} {self.code}: {self.message}"


def http_status_for(sqlstate: str, *, authenticated: bool) -> int:
    """Map a SQLSTATE to PostgREST's HTTP status (its documented table)."""
    exact = {
        "23503": 409, "23505": 409, "25006": 405, "53400": 500,
        "P0001": 400, "42883": 404, "42P01": 404, "42P17": 500,
    }  # fmt: skip
    if sqlstate in exact:
        return exact[sqlstate]
    if sqlstate == "42501":
        return 403 if authenticated else 401
    if sqlstate.startswith("PT") and sqlstate[2:].isdigit():
        return int(sqlstate[2:])
    prefixes = {
        "08": 503, "09": 500, "0L": 403, "0P": 403, "25": 500, "28": 403,
        "2D": 500, "38": 500, "39": 500, "3B": 500, "40": 500, "53": 503,
        "54": 500, "55": 500, "57": 500, "58": 500, "F0": 500, "HV": 500,
        "P0": 500, "XX": 500,
    }  # fmt: skip
    return prefixes.get(sqlstate[:2], 400)


@dataclass(frozen=True)
class _Signature:
    args: tuple[tuple[str, str], ...]  # (name, type) of IN arguments
    returns_set: bool
    returns_composite: bool


def _signature(conn: psycopg.Connection[Any], fn: str, arg_names: frozenset[str]) -> _Signature:
    """Find the public function PostgREST would pick for these argument names.

    Looked up on every call (no cache): tests drop and re-create functions, and a
    missing function must answer PGRST202 as a freshly reloaded PostgREST would.
    """
    rows = (
        conn.cursor(row_factory=tuple_row)
        .execute(
            """
        SELECT coalesce(p.proargnames, '{}'), coalesce(p.proargmodes::text[], '{}'),
               (SELECT array_agg(format_type(t, NULL) ORDER BY o)
                FROM unnest(p.proallargtypes) WITH ORDINALITY AS a (t, o)),
               (SELECT array_agg(format_type(t, NULL) ORDER BY o)
                FROM unnest(p.proargtypes::oid[]) WITH ORDINALITY AS a (t, o)),
               p.pronargdefaults, p.proretset, t.typtype = 'c'
        FROM pg_proc AS p
        JOIN pg_namespace AS n ON n.oid = p.pronamespace
        JOIN pg_type AS t ON t.oid = p.prorettype
        WHERE n.nspname = 'public' AND p.proname = %s
        """,
            (fn,),
        )
        .fetchall()
    )
    for names, modes, all_types, in_types, n_defaults, retset, composite in rows:
        in_names = [n for i, n in enumerate(names) if not modes or modes[i] in ("i", "b")]
        types = all_types if modes else in_types
        in_types_ = [t for i, t in enumerate(types or []) if not modes or modes[i] in ("i", "b")]
        required = set(in_names[: len(in_names) - n_defaults])
        if required <= arg_names <= set(in_names):
            return _Signature(
                args=tuple(
                    (n, t) for n, t in zip(in_names, in_types_, strict=True) if n in arg_names
                ),
                returns_set=retset,
                returns_composite=composite,
            )
    raise PostgRESTError(
        404,
        "PGRST202",
        f"Could not find the function public.{fn}({', '.join(sorted(arg_names))}) "
        "without parameters in the schema cache"
        if not arg_names
        else f"Could not find the function public.{fn}({', '.join(sorted(arg_names))}) "
        "in the schema cache",
        hint="If a new function was created in the database with this name and "
        "parameters, try reloading the schema cache.",
    )


def call_rpc(
    conn: psycopg.Connection[Any],
    fn: str,
    params: Mapping[str, Any] | None = None,
    *,
    role: str = "anon",
    claims: Mapping[str, Any] | None = None,
) -> Any:
    """Call ``public.<fn>`` the way PostgREST does and return its JSON result.

    Runs in one transaction on ``conn`` (which must be in autocommit mode and
    connected as a superuser or ``authenticator``): ``SET LOCAL ROLE role``, the
    claims in ``request.jwt.claims``, named arguments decoded from JSON. Raises
    :class:`PostgRESTError` with PostgREST's status and body on any error.
    """
    if role not in _API_ROLES:
        msg = f"role must be one of {sorted(_API_ROLES)}, not {role!r}"
        raise ValueError(msg)
    params = dict(params or {})
    all_claims = {"role": role, **(claims or {})}
    authenticated = role != "anon"
    try:
        sig = _signature(conn, fn, frozenset(params))
        call_args = sql.SQL(", ").join(
            sql.SQL("{} := _a.{}").format(sql.Identifier(n), sql.Identifier(n)) for n, _ in sig.args
        )
        record_def = sql.SQL(", ").join(
            sql.SQL("{} {}").format(sql.Identifier(n), sql.SQL(t)) for n, t in sig.args
        )
        call = sql.SQL("public.{}({})").format(sql.Identifier(fn), call_args)
        source = (
            sql.SQL("json_to_record(%(body)s::json) AS _a({})").format(record_def)
            if sig.args
            else sql.SQL("(SELECT) AS _a")
        )
        if sig.returns_set or sig.returns_composite:
            query = sql.SQL(
                "SELECT coalesce(json_agg(_r), '[]') FROM {} CROSS JOIN LATERAL {} AS _r"
            ).format(source, call)
        else:
            query = sql.SQL("SELECT to_json({}) FROM {}").format(call, source)
        with conn.transaction(), conn.cursor(row_factory=tuple_row) as cur:
            cur.execute(sql.SQL("SET LOCAL ROLE {}").format(sql.Identifier(role)))
            cur.execute(
                "SELECT set_config('request.jwt.claims', %s, true), "
                "set_config('request.method', 'POST', true), "
                "set_config('request.path', %s, true)",
                (json.dumps(all_claims), f"/rpc/{fn}"),
            )
            cur.execute(query, {"body": json.dumps(params)})
            row = cur.fetchone()
    except psycopg.Error as exc:
        diag = exc.diag
        code = diag.sqlstate or "XX000"
        raise PostgRESTError(
            http_status_for(code, authenticated=authenticated),
            code,
            diag.message_primary or str(exc),
            diag.message_detail,
            diag.message_hint,
        ) from exc
    result = row[0] if row else None
    if sig.returns_composite and not sig.returns_set and isinstance(result, list):
        return result[0] if result else None
    return result


@dataclass
class PostgRESTEmulator:
    """Serve supabase-py's RPC requests (``POST /rest/v1/rpc/<fn>``) from a database.

    Use it as a respx side effect::

        emulator = PostgRESTEmulator(dsn)
        with respx.mock(base_url=emulator.url) as router:
            router.route(path__startswith="/rest/v1/rpc/").mock(side_effect=emulator.handle)
            client = supabase.create_client(emulator.url, emulator.anon_key)

    The role comes from the ``Authorization`` bearer token (falling back to the
    ``apikey`` header), verified with ``jwt_secret`` like PostgREST does: a bad
    signature or an expired token answers 401 ``PGRST301``. Each calling thread gets
    its own connection, so concurrent clients work.
    """

    dsn: str
    url: str = "http://presence.test"
    jwt_secret: str = DEFAULT_JWT_SECRET
    requests: list[str] = field(default_factory=list)
    _local: threading.local = field(default_factory=threading.local, repr=False)
    _connections: list[psycopg.Connection[Any]] = field(default_factory=list, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def anon_key(self) -> str:
        """An anon API key signed with this emulator's secret."""
        return make_token("anon", expires_in=10 * 365 * 86400, secret=self.jwt_secret)

    @property
    def service_role_key(self) -> str:
        """A service_role API key signed with this emulator's secret."""
        return make_token("service_role", expires_in=10 * 365 * 86400, secret=self.jwt_secret)

    def user_token(self, user_id: str, *, expires_in: float = 3600) -> str:
        """An access token for a signed-in user, as GoTrue would issue it."""
        return make_token(
            "authenticated",
            user_id=user_id,
            expires_in=expires_in,
            secret=self.jwt_secret,
        )

    def _connection(self) -> psycopg.Connection[Any]:
        conn: psycopg.Connection[Any] | None = getattr(self._local, "conn", None)
        if conn is None or conn.closed:
            conn = psycopg.connect(self.dsn, autocommit=True)
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    def close(self) -> None:
        """Close every connection the emulator opened."""
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()

    def handle(self, request: httpx.Request) -> httpx.Response:
        """The respx side effect: answer one HTTP request like PostgREST."""
        match = _RPC_PATH.match(request.url.path)
        with self._lock:
            self.requests.append(request.url.path)
        try:
            if request.method != "POST" or match is None:
                raise PostgRESTError(
                    404, "PGRST205", f"no route for {request.method} {request.url.path}"
                )
            claims = self._claims(request)
            try:
                params = json.loads(request.content or b"{}")
            except ValueError as exc:
                raise PostgRESTError(400, "PGRST102", "Empty or invalid json") from exc
            if not isinstance(params, dict):
                raise PostgRESTError(400, "PGRST102", "Empty or invalid json")
            result = call_rpc(
                self._connection(),
                match["fn"],
                params,
                role=claims["role"],
                claims=claims,
            )
        except PostgRESTError as err:
            return httpx.Response(err.status, json=err.body())
        return httpx.Response(200, json=result)

    def _claims(self, request: httpx.Request) -> dict[str, Any]:
        auth = request.headers.get("authorization", "")
        token = auth.removeprefix("Bearer ").strip() if auth.startswith("Bearer ") else ""
        token = token or request.headers.get("apikey", "")
        if not token:
            return {"role": "anon"}
        try:
            claims = decode_jwt(token, self.jwt_secret)
        except JWTError as exc:
            raise PostgRESTError(401, "PGRST301", str(exc)) from exc
        if claims.get("role") not in _API_ROLES:
            raise PostgRESTError(401, "PGRST301", "JWT role is not an API role")
        return claims
