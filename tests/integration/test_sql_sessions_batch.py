"""The service-role batch API (migration 5): presence_track_beat / presence_track_end.

The 10,000-session round trip goes over HTTP into the PostgREST emulator
(``PostgRESTEmulator.handle`` behind an httpx transport, service_role key), the way a
tracker's supabase-py client would call it; the rest uses ``PresenceDatabase.rpc``
(the same emulation without HTTP). Every refused call is checked to change no row.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any

import httpx
import pytest
from sessions_support import (
    advance,
    beat,
    expect_error,
    new_id,
    presence,
    sessions_of,
    stored,
    table_hash,
)

from presence_sdk.testing import PostgRESTEmulator, PresenceDatabase

pytestmark = pytest.mark.integration

BIG = "y" * 5_000_000


def track(db: PresenceDatabase, entries: list[dict[str, Any]]) -> dict[str, Any]:
    result: dict[str, Any] = db.rpc(
        "presence_track_beat", {"sessions": entries}, role="service_role"
    )
    return result


def end(db: PresenceDatabase, ids: list[str]) -> dict[str, Any]:
    result: dict[str, Any] = db.rpc("presence_track_end", {"session_ids": ids}, role="service_role")
    return result


def create_users(db: PresenceDatabase, n: int) -> list[str]:
    rows = db.query(
        "INSERT INTO auth.users (email) SELECT 'batch' || i || '@example.test' "
        "FROM generate_series(1, %s) AS i RETURNING id::text",
        (n,),
    )
    return [r["id"] for r in rows]


@pytest.fixture
def http(presence_db: PresenceDatabase) -> Iterator[tuple[httpx.Client, PostgRESTEmulator]]:
    emulator = presence_db.emulator()
    try:
        with httpx.Client(
            base_url=emulator.url,
            transport=httpx.MockTransport(emulator.handle),
            headers={
                "apikey": emulator.service_role_key,
                "Authorization": f"Bearer {emulator.service_role_key}",
            },
        ) as client:
            yield client, emulator
    finally:
        emulator.close()


def test_ten_thousand_sessions_beat_and_end_over_http(
    presence_db: PresenceDatabase, http: tuple[httpx.Client, PostgRESTEmulator]
) -> None:
    client, _ = http
    users = create_users(presence_db, 5_000)
    entries = [
        {"session_id": new_id(), "user_id": user, "status": status, "device": f"ws-{k}"}
        for user in users
        for k, status in enumerate(("away", "online"))
    ]
    assert len(entries) == 10_000

    started = client.post("/rest/v1/rpc/presence_track_beat", json={"sessions": entries})
    assert started.status_code == 200, started.text
    assert started.json()["count"] == 10_000
    beat_at = datetime.fromisoformat(started.json()["beat_at"])
    counts = presence_db.query(
        "SELECT (SELECT count(*) FROM public.presence_sessions) AS sessions, "
        "(SELECT count(*) FROM public.users WHERE status = 'online' "
        " AND last_heartbeat = %s AND online_since = %s) AS online",
        (beat_at, beat_at),
    )
    assert counts == [{"sessions": 10_000, "online": 5_000}]

    # A steady beat of everyone: sessions only, public.users stays as it was.
    users_before = presence_db.query("SELECT * FROM public.users ORDER BY id")
    again = client.post("/rest/v1/rpc/presence_track_beat", json={"sessions": entries})
    assert again.status_code == 200, again.text
    assert presence_db.query("SELECT * FROM public.users ORDER BY id") == users_before
    assert presence_db.query(
        "SELECT count(*) AS n FROM public.presence_sessions WHERE last_beat = %s",
        (datetime.fromisoformat(again.json()["beat_at"]),),
    ) == [{"n": 10_000}]

    ended = client.post(
        "/rest/v1/rpc/presence_track_end",
        json={"session_ids": [e["session_id"] for e in entries]},
    )
    assert ended.status_code == 200, ended.text
    assert ended.json()["count"] == 10_000
    ended_at = datetime.fromisoformat(ended.json()["ended_at"])
    assert presence_db.query(
        "SELECT (SELECT count(*) FROM public.presence_sessions) AS sessions, "
        "(SELECT count(*) FROM public.users WHERE status = 'offline' "
        " AND last_heartbeat = %s AND online_since IS NULL) AS offline",
        (ended_at,),
    ) == [{"sessions": 0, "offline": 5_000}]


def test_more_than_ten_thousand_entries_are_refused(
    presence_db: PresenceDatabase, http: tuple[httpx.Client, PostgRESTEmulator]
) -> None:
    client, _ = http
    (user,) = create_users(presence_db, 1)
    before = table_hash(presence_db)
    entries = [{"session_id": new_id(), "user_id": user} for _ in range(10_001)]
    response = client.post("/rest/v1/rpc/presence_track_beat", json={"sessions": entries})
    assert response.status_code == 400
    assert response.json()["code"] == "22023"
    assert response.json()["message"] == "presence: at most 10000 sessions per call (got 10001)"
    response = client.post(
        "/rest/v1/rpc/presence_track_end",
        json={"session_ids": [e["session_id"] for e in entries]},
    )
    assert (response.status_code, response.json()["code"]) == (400, "22023")
    assert table_hash(presence_db) == before


def test_a_batch_beats_many_users_with_the_aggregation_rule(presence_db: PresenceDatabase) -> None:
    alice, bob = create_users(presence_db, 2)
    a1, a2, b1 = new_id(), new_id(), new_id()
    result = track(
        presence_db,
        [
            {"session_id": a1, "user_id": alice, "status": "away"},
            {"session_id": a2, "user_id": alice, "status": "busy", "metadata": {"room": 7}},
            {"session_id": b1, "user_id": bob},  # status defaults to online
        ],
    )
    assert result["count"] == 3
    assert (presence(presence_db, alice)["status"], presence(presence_db, bob)["status"]) == (
        "busy",
        "online",
    )
    # NULL device/metadata keep the stored ones; a status change is a transition.
    track(presence_db, [{"session_id": a2, "user_id": alice, "status": "away", "metadata": None}])
    assert stored(presence_db, alice)["status"] == "away"
    assert {s["session_id"]: s["metadata"] for s in sessions_of(presence_db, alice)} == {
        a1: {},
        a2: {"room": 7},
    }
    # A per-user client and a tracker beat different sessions of one user.
    beat(presence_db, alice, new_id(), "online")
    assert presence(presence_db, alice)["status"] == "online"
    assert end(presence_db, [a1, a2, str(uuid.uuid4())])["count"] == 2
    assert presence(presence_db, alice)["online"] is True  # the per-user session is live


def test_the_cap_applies_to_batches(presence_db: PresenceDatabase) -> None:
    (user,) = create_users(presence_db, 1)
    old = [new_id() for _ in range(15)]
    track(presence_db, [{"session_id": s, "user_id": user} for s in old])
    advance(presence_db, 1)
    new = [new_id() for _ in range(10)]
    track(presence_db, [{"session_id": s, "user_id": user} for s in new])
    kept = {s["session_id"] for s in sessions_of(presence_db, user)}
    assert len(kept) == 20
    assert set(new) <= kept  # the five evicted ones are among the older sessions


def test_ending_unknown_sessions_is_a_no_op(presence_db: PresenceDatabase) -> None:
    (user,) = create_users(presence_db, 1)
    track(presence_db, [{"session_id": new_id(), "user_id": user}])
    before = table_hash(presence_db)
    assert end(presence_db, [new_id(), new_id()])["count"] == 0
    assert end(presence_db, [])["count"] == 0
    assert table_hash(presence_db) == before


def test_batch_paths_are_never_jit_compiled(presence_db: PresenceDatabase) -> None:
    """Their statements are estimated in proportion to the batch and the tables (a
    10,000-session batch on 1M users: 145k-195k; 100,000 sessions timing out at once:
    ~970k), past jit_above_cost: compiling takes longer than running them."""
    rows = presence_db.query(
        "SELECT p.oid::regprocedure::text AS fn, p.proconfig FROM pg_proc AS p "
        "WHERE p.oid = ANY (ARRAY[%s, %s, %s, %s]::regprocedure[]) ORDER BY 1",
        (
            "public.presence_track_beat(jsonb)",
            "public.presence_track_end(uuid[])",
            "presence_private.sync_users(uuid[], timestamptz[])",
            "presence_private.log_sessions_ended()",
        ),
    )
    assert len(rows) == 4
    for row in rows:
        assert "jit=off" in row["proconfig"], row


def test_a_batch_keeps_live_0_1_0_presence(presence_db: PresenceDatabase) -> None:
    (user,) = create_users(presence_db, 1)
    presence_db.query(
        "UPDATE public.users SET status = 'online', last_heartbeat = now() - interval '5 s', "
        "online_since = now() - interval '2 hours' WHERE id = %s",
        (user,),
    )
    since = presence(presence_db, user)["online_since"]
    track(presence_db, [{"session_id": new_id(), "user_id": user, "status": "away"}])
    now = presence(presence_db, user)
    assert (now["status"], now["online_since"]) == ("online", since)


# (id, entries builder, code, HTTP status, message start, detail fragment)
BadBatch = tuple[str, Any, str, int, str, str]


def _bad_batches(user: str, other: str, others_session: str) -> list[BadBatch]:
    sid = "6f1c7f0e-6a57-4c39-8d6e-2f0a9d4b1c11"
    ok = {"session_id": new_id(), "user_id": user}
    return [
        (
            "not-an-array",
            {"session_id": sid},
            "22023",
            400,
            "presence: sessions must be a JSON array",
            "",
        ),
        ("null", None, "22023", 400, "presence: sessions must be a JSON array", ""),
        (
            "entry-not-object",
            [ok, "x"],
            "22023",
            400,
            "presence: 1 of 2 session entries",
            "#2: not a JSON object",
        ),
        (
            "unknown-key",
            [ok | {"stauts": "away"}],
            "22023",
            400,
            "presence: 1 of 1",
            "#1: unknown key 'stauts'",
        ),
        (
            "session-missing",
            [{"user_id": user}],
            "22023",
            400,
            "presence: 1 of 1",
            "#1: session_id is not a uuid",
        ),
        (
            "session-malformed",
            [ok, {"session_id": "abc", "user_id": user}],
            "22023",
            400,
            "presence: 1 of 2",
            "#2: session_id is not a uuid: '\"abc\"'",
        ),
        (
            "session-number",
            [{"session_id": 7, "user_id": user}],
            "22023",
            400,
            "presence: 1 of 1",
            "session_id is not a uuid: '7'",
        ),
        (
            "session-5MB",
            [{"session_id": BIG, "user_id": user}],
            "22023",
            400,
            "presence: 1 of 1",
            "(5000002 characters)",
        ),
        (
            "user-malformed",
            [{"session_id": sid, "user_id": "u1"}],
            "22023",
            400,
            "presence: 1 of 1",
            "#1: user_id is not a uuid",
        ),
        (
            "status-offline",
            [ok | {"status": "offline"}],
            "22023",
            400,
            "presence: 1 of 1",
            "status must be online, away or busy: '\"offline\"'",
        ),
        (
            "status-number",
            [ok | {"status": 1}],
            "22023",
            400,
            "presence: 1 of 1",
            "status must be online, away or busy",
        ),
        (
            "device-long",
            [ok | {"device": "d" * 65}],
            "22023",
            400,
            "presence: 1 of 1",
            "device must be a string of 1 to 64",
        ),
        (
            "device-empty",
            [ok | {"device": ""}],
            "22023",
            400,
            "presence: 1 of 1",
            "device must be a string of 1 to 64",
        ),
        (
            "metadata-array",
            [ok | {"metadata": []}],
            "22023",
            400,
            "presence: 1 of 1",
            "metadata must be a JSON object of at most 1024 bytes (got array",
        ),
        (
            "metadata-big",
            [ok | {"metadata": {"k": "v" * 2000}}],
            "22023",
            400,
            "presence: 1 of 1",
            "(got object of 2009 bytes)",
        ),
        (
            "many-bad",
            [{"session_id": str(i)} for i in range(8)],
            "22023",
            400,
            "presence: 8 of 8",
            "#5: session_id is not a uuid: '\"4\"'; ...",
        ),
        (
            "duplicate",
            [{"session_id": sid, "user_id": user}, {"session_id": sid, "user_id": user}],
            "22023",
            400,
            "presence: 1 session ids appear more than once",
            sid,
        ),
        (
            "others-session",
            [ok, {"session_id": others_session, "user_id": user}],
            "PT409",
            409,
            "presence: 1 sessions belong to other users",
            f"{others_session} (given user {user})",
        ),
        (
            "others-implicit-id",
            [{"session_id": other, "user_id": user}],
            "PT409",
            409,
            "presence: 1 sessions belong to other users",
            other,
        ),
        (
            "unknown-user",
            [ok, {"session_id": sid, "user_id": "00000000-0000-4000-8000-00000000beef"}],
            "23503",
            409,
            "presence: 1 user ids have no public.users row",
            "00000000-0000-4000-8000-00000000beef",
        ),
    ]


BAD_IDS = [b[0] for b in _bad_batches("u", "o", "s")]


@pytest.mark.parametrize("case", BAD_IDS)
def test_bad_batches_are_refused_whole_and_change_nothing(
    presence_db: PresenceDatabase, case: str
) -> None:
    user, other = create_users(presence_db, 2)
    others_session = new_id()
    track(presence_db, [{"session_id": others_session, "user_id": other, "device": "theirs"}])
    mine = new_id()
    track(presence_db, [{"session_id": mine, "user_id": user, "status": "busy"}])
    (found,) = [b for b in _bad_batches(user, other, others_session) if b[0] == case]
    _, entries, code, status, message, detail = found
    before = table_hash(presence_db)
    err = expect_error(
        presence_db, "presence_track_beat", {"sessions": entries}, role="service_role"
    )
    assert (err.status, err.code) == (status, code), err
    assert err.message.startswith(message), err.message
    assert detail in (err.details or "")
    assert len(err.message) + len(err.details or "") < 1_000  # echoes are truncated
    assert err.hint
    assert table_hash(presence_db) == before


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        (None, "presence: session_ids must be an array of uuids (got NULL)"),
        ([str(uuid.uuid4()), None], "presence: session_ids must not contain null (position 2)"),
    ],
)
def test_bad_end_calls_are_refused(
    presence_db: PresenceDatabase, ids: list[str | None] | None, message: str
) -> None:
    (user,) = create_users(presence_db, 1)
    track(presence_db, [{"session_id": new_id(), "user_id": user}])
    before = table_hash(presence_db)
    err = expect_error(presence_db, "presence_track_end", {"session_ids": ids}, role="service_role")
    assert (err.status, err.code, err.message) == (400, "22023", message)
    malformed = expect_error(
        presence_db, "presence_track_end", {"session_ids": ["nope"]}, role="service_role"
    )
    assert (malformed.status, malformed.code) == (400, "22P02")
    assert table_hash(presence_db) == before
