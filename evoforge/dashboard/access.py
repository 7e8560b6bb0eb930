"""Who may do what: every page is readable, but answering an approval resumes a run, so it needs the token
printed at start-up and, unless the server was told otherwise, a client on the loopback interface.

The browser gets the token once, from the link the server prints (`?token=...`); it is kept in a SameSite=Strict
cookie, so a page of another site cannot post an answer with it.
"""

from __future__ import annotations

import ipaddress
import os
import secrets
from urllib.parse import urlsplit

from starlette.requests import Request

TOKEN_ENV = "EVOFORGE_DASHBOARD_TOKEN"
COOKIE = "evoforge_dashboard_token"
HEADER = "x-evoforge-token"


def make_token() -> str:
    """`EVOFORGE_DASHBOARD_TOKEN` when set (e.g. to keep one across restarts), else a new random one."""
    return os.environ.get(TOKEN_ENV) or secrets.token_urlsafe(24)


def is_loopback(host: str | None) -> bool:
    if not host:
        return False
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def token_matches(given: str | None, token: str) -> bool:
    return given is not None and given != "" and secrets.compare_digest(given.encode(), token.encode())


def same_origin(request: Request) -> bool:
    """A browser names the page a form came from; an answer posted from another origin is refused."""
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    return urlsplit(origin).netloc == request.headers.get("host")


def refusal(request: Request, token: str, form_token: str | None, *, remote_answers: bool) -> str | None:
    """Why this request may not answer an approval, or None when it may."""
    client = request.client.host if request.client else None
    if not remote_answers and not is_loopback(client):
        return f"this dashboard is read-only for {client or 'unknown clients'}: answers come from the machine itself"
    if not same_origin(request):
        return "the answer came from a page of another site"
    given = request.headers.get(HEADER) or form_token or request.cookies.get(COOKIE)
    if not token_matches(given, token):
        return "answering needs the dashboard's token: open the link `evoforge ui` printed at start-up"
    return None


def has_token(request: Request, token: str) -> bool:
    return token_matches(request.cookies.get(COOKIE), token)
