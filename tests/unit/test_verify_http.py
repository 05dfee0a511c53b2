"""verify_setup() over HTTP with real supabase-py clients and mocked PostgREST answers.

The happy path through a PostgREST emulation backed by the real database is in
tests/integration/test_verify_db.py; here the server's failure modes are mocked with
respx: missing function (PGRST202), bad key (401), forbidden (anon key), 5xx, an HTML
502 from a proxy, and an unreachable host.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from typing import Any

import httpx
import pytest
import pytest_asyncio
import respx
from supabase import AClientOptions, AsyncClient, Client, ClientOptions, create_client
from supabase import acreate_client as _acreate_client

from presence_sdk import testing
from presence_sdk._exceptions import (
    AuthenticationError,
    ConfigurationError,
    PermissionDeniedError,
    RejectedError,
    SetupError,
    TransientError,
)
from presence_sdk._verify_io import averify_setup, verify_setup

URL = "http://presence.test"
RPC = f"{URL}/rest/v1/rpc/presence_setup_report"
SERVICE_KEY = testing.make_token("service_role", expires_in=3600)

PGRST202 = {
    "code": "PGRST202",
    "message": "Could not find the function public.presence_setup_report without parameters "
    "in the schema cache",
    "details": None,
    "hint": None,
}
HTML_502 = "<html><head><title>502 Bad Gateway</title></head><body>cloudflare</body></html>"


@pytest.fixture
def client() -> Iterator[Client]:
    http = httpx.Client(timeout=5)
    with http:
        yield create_client(URL, SERVICE_KEY, options=ClientOptions(httpx_client=http))


@pytest_asyncio.fixture
async def aclient() -> AsyncIterator[AsyncClient]:
    http = httpx.AsyncClient(timeout=5)
    async with http:
        yield await _acreate_client(URL, SERVICE_KEY, options=AClientOptions(httpx_client=http))


def mock(router: respx.Router, **response: Any) -> respx.Route:
    return router.post(RPC).mock(return_value=httpx.Response(**response))


def test_pgrst202_becomes_a_report_that_says_apply_the_migrations(client: Client) -> None:
    with respx.mock(assert_all_called=True) as router:
        route = mock(router, status_code=404, json=PGRST202)
        report = verify_setup(client, raise_on_error=False)
        with pytest.raises(SetupError) as raised:
            verify_setup(client)
    assert route.call_count == 2
    assert [c.name for c in report.problems] == ["schema.installed"]
    finding = report.problems[0]
    assert "presence_setup_report() is missing" in finding.detail
    assert "presence-sdk migrate" in finding.fix
    assert "NOTIFY pgrst, 'reload schema'" in finding.fix
    assert raised.value.report.problems == report.problems
    assert "schema.installed" in str(raised.value)


def test_one_post_with_the_service_key(client: Client) -> None:
    with respx.mock() as router:
        route = mock(router, status_code=404, json=PGRST202)
        verify_setup(client, raise_on_error=False)
    request = route.calls.last.request
    assert request.method == "POST"
    assert request.headers["apikey"] == SERVICE_KEY
    assert request.headers["authorization"] == f"Bearer {SERVICE_KEY}"


@pytest.mark.parametrize(
    ("response", "error", "words"),
    [
        (
            {"status_code": 401, "json": {"code": "PGRST301", "message": "JWT expired"}},
            AuthenticationError,
            "service_role key",
        ),
        (
            {
                "status_code": 401,
                "json": {
                    "message": "Invalid API key",
                    "hint": "Double check your Supabase `anon` or `service_role` API key.",
                },
            },
            AuthenticationError,
            "SUPABASE_SERVICE_ROLE_KEY",
        ),
        (
            {
                "status_code": 401,
                "json": {
                    "code": "42501",
                    "message": "permission denied for function presence_setup_report",
                },
            },
            PermissionDeniedError,
            "needs the service_role key",
        ),
        (
            {"status_code": 503, "json": {"code": "PGRST001", "message": "Database client error"}},
            TransientError,
            "project is up",
        ),
        ({"status_code": 500, "text": "upstream failed"}, TransientError, "SUPABASE_URL"),
        (
            {"status_code": 502, "text": HTML_502, "headers": {"content-type": "text/html"}},
            TransientError,
            "SUPABASE_URL",
        ),
        (
            {"status_code": 404, "text": "<html>Not Found</html>"},
            RejectedError,
            "without /rest/v1",
        ),
    ],
)
def test_http_failures_become_clear_presence_errors(
    client: Client, response: dict[str, Any], error: type[Exception], words: str
) -> None:
    with respx.mock() as router:
        mock(router, **response)
        with pytest.raises(error) as raised:
            verify_setup(client)
    assert type(raised.value) is error
    assert words in str(raised.value)
    assert "<html>" not in str(raised.value)
    assert raised.value.__cause__ is not None


def test_unreachable_server_is_a_transient_error(client: Client) -> None:
    with respx.mock() as router:
        router.post(RPC).mock(side_effect=httpx.ConnectError("connection refused"))
        with pytest.raises(TransientError) as raised:
            verify_setup(client)
    assert "could not reach the server" in str(raised.value)
    assert isinstance(raised.value.__cause__, httpx.ConnectError)


def test_read_timeout_is_a_transient_error(client: Client) -> None:
    with respx.mock() as router:
        router.post(RPC).mock(side_effect=httpx.ReadTimeout("slow"))
        with pytest.raises(TransientError, match="timed out"):
            verify_setup(client)


def test_a_non_object_answer_is_rejected(client: Client) -> None:
    with respx.mock() as router:
        mock(router, status_code=200, json=[1, 2])
        with pytest.raises(RejectedError, match="other than a JSON object"):
            verify_setup(client)


def test_arguments_are_checked_before_any_io(client: Client) -> None:
    with pytest.raises(ConfigurationError, match="either"):
        verify_setup()
    with pytest.raises(ConfigurationError, match="either"):
        verify_setup(client, dsn="postgresql://x@localhost/db")
    with pytest.raises(ConfigurationError, match="expected a supabase client"):
        verify_setup("http://presence.test")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="invalid database URL") as raised:
        verify_setup(dsn="postgres:secret@host/db")
    assert "secret" not in str(raised.value)


@pytest.mark.asyncio
async def test_async_client_pgrst202_and_401(aclient: AsyncClient) -> None:
    with respx.mock() as router:
        route = mock(router, status_code=404, json=PGRST202)
        report = await averify_setup(aclient, raise_on_error=False)
        assert [c.name for c in report.problems] == ["schema.installed"]
        with pytest.raises(SetupError):
            await averify_setup(aclient)
        route.mock(return_value=httpx.Response(401, json={"code": "PGRST301", "message": "bad"}))
        with pytest.raises(AuthenticationError):
            await averify_setup(aclient)
        route.mock(return_value=httpx.Response(502, text=HTML_502))
        with pytest.raises(TransientError):
            await averify_setup(aclient)
        route.mock(side_effect=httpx.ConnectError("refused"))
        with pytest.raises(TransientError):
            await averify_setup(aclient)


@pytest.mark.asyncio
async def test_flavours_must_match(client: Client, aclient: AsyncClient) -> None:
    with respx.mock(assert_all_called=False) as router:
        route = mock(router, status_code=404, json=PGRST202)
        with pytest.raises(ConfigurationError, match="averify_setup"):
            verify_setup(aclient)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match=r"verify_setup\(client\)"):
            await averify_setup(client)  # type: ignore[arg-type]
    assert route.call_count == 0  # refused before sending anything
