"""Test helpers for apps that use presence_sdk (and for presence_sdk itself).

Everything here runs against real parts: a throwaway PostgreSQL cluster with
pg_cron (:class:`PostgresCluster`), prepared like a Supabase project
(:class:`PresenceTestServer`: roles, ``auth`` schema, the shipped presence SQL), and
an emulation of PostgREST (:func:`call_rpc`, :class:`PostgRESTEmulator`) that runs
each call exactly as PostgREST would, so RLS and grants behave as on Supabase.

pytest fixtures (``presence_server``, ``presence_db``, ``presence_cron_db``) are
registered automatically when presence_sdk is installed; see
:mod:`presence_sdk.testing.pytest_plugin`.

Example::

    def test_user_goes_online(presence_db):
        user = presence_db.create_user()
        presence_db.rpc("presence_heartbeat", {"new_status": "online"}, user_id=user)
        assert presence_db.rpc("presence_is_online", {"user_id": user}, user_id=user)
"""

from presence_sdk.testing._bootstrap import (
    PresenceDatabase,
    apply_presence_sql,
    install_supabase_shim,
    supabase_shim_sql,
)
from presence_sdk.testing._cluster import ClusterError, PostgresCluster, find_bindir
from presence_sdk.testing._http import LocalPostgREST
from presence_sdk.testing._jwt import (
    DEFAULT_JWT_SECRET,
    JWTError,
    decode_jwt,
    encode_jwt,
    make_token,
)
from presence_sdk.testing._postgrest import (
    PostgRESTEmulator,
    PostgRESTError,
    call_rpc,
    http_status_for,
)
from presence_sdk.testing._server import PresenceTestServer

__all__ = [
    "DEFAULT_JWT_SECRET",
    "ClusterError",
    "JWTError",
    "LocalPostgREST",
    "PostgRESTEmulator",
    "PostgRESTError",
    "PostgresCluster",
    "PresenceDatabase",
    "PresenceTestServer",
    "apply_presence_sql",
    "call_rpc",
    "decode_jwt",
    "encode_jwt",
    "find_bindir",
    "http_status_for",
    "install_supabase_shim",
    "make_token",
    "supabase_shim_sql",
]
