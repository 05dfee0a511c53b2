"""``presence-sdk status`` on tables the SDK did not make (issue 11, defect 6)."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator

import pytest

from presence_sdk.cli import EXIT_OK, main
from presence_sdk.testing import (
    PresenceDatabase,
    PresenceTestServer,
    apply_presence_sql,
    install_supabase_shim,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def nullable_status_db(presence_server: PresenceTestServer) -> Iterator[PresenceDatabase]:
    """A hand-made users table whose status is nullable, with NULL rows, migrated."""
    with presence_server.database(template=None) as db:
        with db.connect() as conn:
            install_supabase_shim(conn)
            conn.execute("CREATE TABLE public.users (id uuid PRIMARY KEY, status text)")
            conn.execute(
                "INSERT INTO public.users (id, status) "
                "SELECT gen_random_uuid(), NULL FROM generate_series(1, 2)"
            )
            apply_presence_sql(conn, schema=False)
        yield db


def test_status_counts_rows_without_a_status_and_infinite_heartbeats(
    capsys: pytest.CaptureFixture[str], nullable_status_db: PresenceDatabase
) -> None:
    db = nullable_status_db
    beating = str(uuid.uuid4())
    forged = str(uuid.uuid4())
    db.query("INSERT INTO public.users (id) VALUES (%s), (%s)", (beating, forged))
    db.rpc("presence_heartbeat", {"new_status": "busy"}, user_id=beating)
    # Written around the functions by a privileged role (clients no longer can).
    db.query(
        "UPDATE public.users SET status = 'online', last_heartbeat = 'infinity' WHERE id = %s",
        (forged,),
    )

    assert main(["status", "--dsn", db.dsn, "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["stored"] == {"busy": 1, "online": 1}
    assert data["stored_without_status"] == 2
    assert data["infinite_heartbeats"] == 1
    assert data["counts"] == {
        "online": 1,
        "away": 0,
        "busy": 1,
        "offline": 2,
        "offline_estimated": False,
    }
    assert [row["user_id"] for row in data["newest"]] == [beating]

    assert main(["status", "--dsn", db.dsn]) == EXIT_OK
    out = capsys.readouterr().out
    assert "  (none)          -        2  (no status: reads as offline)" in out
    assert "1 user(s) with an infinite last_heartbeat" in out
    assert f"  {beating}  busy     " in out


def test_status_shows_invisible_users_as_the_owner_sees_them(
    capsys: pytest.CaptureFixture[str], presence_db: PresenceDatabase
) -> None:
    hidden, shown = presence_db.create_user(), presence_db.create_user()
    for user in (hidden, shown):
        presence_db.rpc("presence_heartbeat", {"new_status": "online"}, user_id=user)
    presence_db.rpc("presence_set_invisible", {"invisible": True}, user_id=hidden)

    assert main(["status", "--dsn", presence_db.dsn, "--json"]) == EXIT_OK
    data = json.loads(capsys.readouterr().out)
    assert data["invisible"] == 1
    assert data["counts"]["online"] == 2  # the owner counts the truth
    assert {row["user_id"]: row["invisible"] for row in data["newest"]} == {
        hidden: True,
        shown: False,
    }
    assert main(["status", "--dsn", presence_db.dsn]) == EXIT_OK
    out = capsys.readouterr().out
    assert "invisible: 1 user(s) (others see them offline" in out
    assert f"  {hidden}  online   " in out
    assert out.count("(invisible)") == 1
    assert "  total           2" in out
