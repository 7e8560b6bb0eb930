"""The dashboard's Starlette app: pages under /dashboard, their JSON under /dashboard/api, assets under
/dashboard/static (all shipped in the package, so it works with no network).

`app` is what langgraph.json's `http.app` names: the `langgraph dev` server imports this file by path and
serves these routes beside the thread API. `evoforge ui` serves `create_app(...)` on its own. The imports are
absolute because the server loads the file as a module of its own name.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any
from urllib.parse import parse_qs, urlencode

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from evoforge.config import ConfigError, RunConfig, load_config
from evoforge.dashboard import access
from evoforge.dashboard.approvals import AnswerInProgress, ApprovalDesk, StaleApproval, decision_from_form
from evoforge.dashboard.queries import DashboardData
from evoforge.graph.runner import RunNotFound
from evoforge.report.writer import number_text, pretty_json

log = logging.getLogger(__name__)

ROOT = "/dashboard"
POLL_MS = 2000
"""How often an open page asks for fresh data; the queries are a few indexed reads per run."""


def _templates() -> Environment:
    env = Environment(loader=PackageLoader("evoforge.dashboard", "templates"), autoescape=True,
                      undefined=StrictUndefined, trim_blocks=True, lstrip_blocks=True)
    env.filters.update(number=number_text, setting_text=json.dumps, pretty=pretty_json)
    env.globals.update(root=ROOT, poll_ms=POLL_MS)
    return env


class Dashboard:
    """The state one app holds: its configuration (the database to read), the token, the answers given."""

    def __init__(self, config: RunConfig | None, token: str, remote_answers: bool) -> None:
        self._config = config
        self.token = token
        self.remote_answers = remote_answers
        self.templates = _templates()
        self._data: DashboardData | None = None
        self._desk: ApprovalDesk | None = None

    @property
    def data(self) -> DashboardData:
        # read from the environment on first use: under `langgraph dev` that is the server's own
        # EVOFORGE_DATABASE_URL / EVOFORGE_STATE_DIR, the same database its checkpointer uses
        if self._data is None:
            self._data = DashboardData(self._config or load_config(None))
        return self._data

    @property
    def desk(self) -> ApprovalDesk:
        if self._desk is None:
            self._desk = ApprovalDesk(self.data.config)
        return self._desk

    def page(self, request: Request, template: str, status_code: int = 200, **values: Any) -> HTMLResponse:
        html = self.templates.get_template(template).render(
            can_answer=access.has_token(request, self.token), **values)
        return HTMLResponse(html, status_code=status_code)

    def error(self, request: Request, status_code: int, message: str) -> HTMLResponse:
        return self.page(request, "error.html.jinja", status_code, message=message)


def _routes(board: Dashboard) -> list[Route | Mount]:
    def runs_page(request: Request) -> Response:
        return board.page(request, "runs.html.jinja", runs=board.data.runs())

    def runs_json(request: Request) -> Response:
        return JSONResponse(board.data.runs())

    def run_page(request: Request) -> Response:
        run_id = request.path_params["run_id"]
        try:
            live = board.data.run_live(run_id)
        except KeyError:
            return board.error(request, 404, f"no run {run_id!r}")
        return board.page(request, "run.html.jinja", live=live, live_json=_script_json(live))

    def run_json(request: Request) -> Response:
        try:
            live = board.data.run_live(request.path_params["run_id"])
        except KeyError as exc:
            return JSONResponse({"error": str(exc)}, status_code=404)
        live["answers"] = [a.as_json() for a in board.desk.answers(live["run"]["id"])]
        return JSONResponse(json.loads(json.dumps(live, default=str)))

    def node_page(request: Request) -> Response:
        node_id = request.path_params["node_id"]
        detail = board.data.node_detail(node_id)
        if detail is None:
            return board.error(request, 404, f"no node {node_id!r}")
        return board.page(request, "node.html.jinja", **detail)

    def cognition_page(request: Request) -> Response:
        task = request.query_params.get("task") or None
        found = board.data.cognition(request.query_params.get("q", ""), task)
        return board.page(request, "cognition.html.jinja", **found)

    def approvals_page(request: Request) -> Response:
        answers = board.desk.answers()
        applying = {(a.run_id, a.lane) for a in answers if a.state == "applying"}
        notice = request.query_params.get("notice")
        return board.page(request, "approvals.html.jinja", approvals=board.data.approvals(), answers=answers,
                          applying=applying, notice=notice)

    def approvals_json(request: Request) -> Response:
        pending = [{k: request_[k] for k in ("run_id", "lane", "node_id", "candidate", "stage", "cost")}
                   for request_ in board.data.approvals()]
        return JSONResponse({"pending": pending, "answers": [a.as_json() for a in board.desk.answers()]})

    async def answer(request: Request) -> Response:
        form = {key: values[-1] for key, values in parse_qs((await request.body()).decode()).items()}
        refused = access.refusal(request, board.token, form.get("token"), remote_answers=board.remote_answers)
        if refused:
            return board.error(request, 403, refused)
        run_id, lane = request.path_params["run_id"], int(request.path_params["lane"])
        settings = {key[len("setting."):]: value for key, value in form.items() if key.startswith("setting.")}
        try:
            answer = await run_in_threadpool(_answer, board, run_id, lane, form, settings)
        except RunNotFound as exc:
            return board.error(request, 404, str(exc))
        except (StaleApproval, AnswerInProgress) as exc:
            return board.error(request, 409, str(exc))
        except (ValueError, ConfigError) as exc:
            return board.error(request, 400, str(exc))
        notice = f"{answer.decision['action']} sent for run {run_id}, lane {lane}: the run goes on"
        back = form.get("next") if (form.get("next") or "").startswith(ROOT + "/") else f"{ROOT}/approvals"
        return RedirectResponse(f"{back}?{urlencode({'notice': notice})}", status_code=303)

    def adopt_token(request: Request) -> Response:
        """`/dashboard/?token=...`: keep a correct token in a cookie and drop it from the address bar."""
        response = runs_page(request)
        if access.token_matches(request.query_params.get("token"), board.token):
            response = RedirectResponse(f"{ROOT}/", status_code=303)
            response.set_cookie(access.COOKIE, board.token, httponly=True, samesite="strict", path=ROOT)
        return response

    return [
        Route(f"{ROOT}/", adopt_token),
        Route(ROOT, lambda request: RedirectResponse(f"{ROOT}/")),
        Route(f"{ROOT}/api/runs", runs_json),
        Route(f"{ROOT}/runs/{{run_id}}", run_page),
        Route(f"{ROOT}/api/runs/{{run_id}}", run_json),
        Route(f"{ROOT}/nodes/{{node_id}}", node_page),
        Route(f"{ROOT}/cognition", cognition_page),
        Route(f"{ROOT}/approvals", approvals_page),
        Route(f"{ROOT}/api/approvals", approvals_json),
        Route(f"{ROOT}/approvals/{{run_id}}/{{lane:int}}", answer, methods=["POST"]),
        Mount(f"{ROOT}/static", StaticFiles(packages=[("evoforge.dashboard", "static")]), name="static"),
    ]


def _script_json(value: Any) -> str:
    """JSON to embed in a <script> element: what the models wrote cannot close the element early."""
    text = json.dumps(value, default=str)
    return text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")


def _answer(board: Dashboard, run_id: str, lane: int, form: dict[str, str], settings: dict[str, str]) -> Any:
    request = board.desk.request_for(run_id, lane)
    current = (request or {}).get("settings") or {}
    decision = decision_from_form(form.get("action", ""), form.get("reason", ""), settings, current)
    return board.desk.answer(run_id, lane, form.get("node_id", ""), decision)


def create_app(config: RunConfig | None = None, *, token: str | None = None, remote_answers: bool = False,
               standalone: bool = False) -> Starlette:
    """The dashboard over `config`'s database (None: the environment's, read on the first request).

    `standalone` also sends `/` to the dashboard (on the `langgraph dev` server `/` is not ours to take).
    """
    board = Dashboard(config, token or access.make_token(), remote_answers)
    routes = _routes(board)
    if standalone:
        routes.insert(0, Route("/", lambda request: RedirectResponse(f"{ROOT}/")))

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if not standalone:  # `evoforge ui` prints its own link, with the host and port
            print(f"EvoForge dashboard at {ROOT}/ on this server; to answer approvals open "
                  f"{ROOT}/?token={board.token}", file=sys.stderr, flush=True)
        yield
        if board._desk is not None and any(a.state == "applying" for a in board.desk.answers()):
            log.warning("the dashboard stops while an approved lane is still running: continue it with "
                        "`evoforge resume RUN_ID`")

    dashboard = Starlette(routes=routes, lifespan=lifespan)
    dashboard.state.dashboard = board
    return dashboard


app = create_app()
