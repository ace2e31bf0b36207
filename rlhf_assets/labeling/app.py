"""The labeling web app (Starlette + Jinja2, served by uvicorn): one blinded pair at a time, keyboard-first.

Access: each annotator has a token (`rlhf-assets annotators add NAME`). Browsers sign in at `/login`, which
reads the token from the link's #fragment (never sent in a URL, so it stays out of access logs), shows the
account it belongs to and, once the annotator confirms, sets an HttpOnly, SameSite=Strict cookie;
scripts send `Authorization: Bearer <token>` to `/api/...`. No token: 401;
an unknown token: 403. Model and prompt text is red-team dialogue: templates autoescape it and the
Content-Security-Policy allows only our own script, so markup in a response is shown, never run.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

from rlhf_assets.labeling.store import LabelError, LabelStore

COOKIE = "rlhf_label_token"
# Under TLS the cookie is `__Host-` prefixed: browsers accept it only from a secure origin, with Path=/ and no
# Domain, so no sibling subdomain (and no plain-HTTP page) can plant one; the unprefixed name is then ignored.
SECURE_COOKIE = f"__Host-{COOKIE}"
MAX_BODY_BYTES = 1_000_000
MAX_HEADERS, MAX_HEADER_BYTES = 100, 16_384  # per request: count, and size of the request line plus headers
HEADER_TIMEOUT_SECONDS, BODY_TIMEOUT_SECONDS = 10.0, 30.0  # defaults: to send the request head, then the body
MAX_CONNECTIONS = 200
HERE = Path(__file__).parent
SECURITY_HEADERS = {
    "content-security-policy": "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "x-content-type-options": "nosniff",
    "referrer-policy": "no-referrer",
    "cache-control": "no-store",
}


class _SecurityHeaders:
    """Adds the CSP and friends to every response."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = list(message["headers"]) + [
                    (k.encode(), v.encode()) for k, v in SECURITY_HEADERS.items()]
            await send(message)

        await self.app(scope, receive, send_with_headers)


class _SameOrigin:
    """Refuses state-changing requests a browser sent from another origin or site.

    SameSite=Strict keeps the cookie off cross-site requests, but not off same-site ones (the Dagster UI on
    another port of the same host is same-site). Browsers say where a request comes from (`Origin`,
    `Sec-Fetch-Site`); scripts send neither and authenticate with a bearer token, so they are unaffected.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
            site = headers.get("sec-fetch-site")
            origin = headers.get("origin")
            own = f"{scope.get('scheme', 'http')}://{headers.get('host', '')}"
            # Our Referrer-Policy (no-referrer) makes browsers send `Origin: null` on form posts; then
            # Sec-Fetch-Site decides, and a null Origin without it is refused.
            cross_site = site is not None and site not in ("same-origin", "none")
            foreign = origin is not None and origin != own and (origin != "null" or site is None)
            if cross_site or foreign:
                response = PlainTextResponse(f"cross-origin request refused (Origin {origin!r}, Sec-Fetch-Site "
                                             f"{site!r})", status_code=403)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


class _RequestLimits:
    """Bounds what one request may cost before any route sees it: the header count, the body's size (413, read
    at most once, never spooled to disk), the time to send the body (408), and no multipart at all (415: no
    endpoint takes files, and Starlette would spool uploads to disk)."""

    def __init__(self, app: ASGIApp, max_body_bytes: int, body_timeout: float) -> None:
        self.app, self.max_body_bytes, self.body_timeout = app, max_body_bytes, body_timeout

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = scope["headers"]
        length = next((value for key, value in headers if key.lower() == b"content-length"), None)
        kind = next((value for key, value in headers if key.lower() == b"content-type"), b"")
        refusal = (
            (431, f"more than {MAX_HEADERS} headers") if len(headers) > MAX_HEADERS
            else (415, "multipart bodies are not accepted (no endpoint takes files)")
            if kind.lower().startswith(b"multipart/")
            else (413, f"body is over the {self.max_body_bytes:,}-byte limit")
            if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes) else None)
        if refusal is None and scope["method"] not in ("GET", "HEAD", "OPTIONS"):
            body = await self._read_body(receive)
            if isinstance(body, tuple):
                refusal = body
            else:
                receive = _replay(body, receive)
        if refusal is not None:
            status, message = refusal
            response = (JSONResponse({"error": message}, status_code=status) if scope["path"].startswith("/api/")
                        else PlainTextResponse(message, status_code=status))
            response.headers["connection"] = "close"
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)

    async def _read_body(self, receive: Receive) -> bytes | tuple[int, str]:
        """The whole body, or why it was refused: held in memory only up to the limit, with a deadline for all
        of it (a client trickling a byte a second holds no connection for long)."""
        chunks, size = [], 0
        deadline = asyncio.get_running_loop().time() + self.body_timeout
        while True:
            try:
                message = await asyncio.wait_for(receive(), deadline - asyncio.get_running_loop().time())
            except TimeoutError:
                return 408, f"the body took over {self.body_timeout:g} s to arrive"
            if message["type"] == "http.disconnect":
                return 400, "client disconnected"
            size += len(message.get("body", b""))
            if size > self.max_body_bytes:
                return 413, f"body is over the {self.max_body_bytes:,}-byte limit"
            chunks.append(message.get("body", b""))
            if not message.get("more_body", False):
                return b"".join(chunks)


def _replay(body: bytes, server_receive: Receive) -> Receive:
    """A `receive` that hands the app the body already read, then passes on the server's (its disconnect)."""
    sent = False

    async def receive() -> Any:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await server_receive()

    return receive


class _HeaderDeadlineH11(H11Protocol):
    """uvicorn's h11 protocol (which caps the request head at `MAX_HEADER_BYTES`), with a deadline for each request
    head: uvicorn's keep-alive timer restarts on every byte, so a client sending one header line every few
    seconds held its connection for ever. The deadline starts when the connection opens and again when a
    response completes (the next request on a kept-alive connection); the body has its own (`_RequestLimits`)."""

    header_timeout = HEADER_TIMEOUT_SECONDS

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._head_deadline: asyncio.TimerHandle | None = None
        self._arm_head_deadline()

    def _arm_head_deadline(self) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        self._cycle_before_head = self.cycle  # a new request replaces it once its head has arrived
        self._head_deadline = self.loop.call_later(self.header_timeout, self._head_too_slow)

    def _head_too_slow(self) -> None:
        if self.cycle is self._cycle_before_head and not self.transport.is_closing():
            self.transport.close()

    def handle_events(self) -> None:
        super().handle_events()
        if self._head_deadline is not None and self.cycle is not self._cycle_before_head:
            self._head_deadline.cancel()
            self._head_deadline = None

    def on_response_complete(self) -> None:
        finished = self.cycle
        super().on_response_complete()  # may already start a pipelined request's cycle
        if self.cycle is finished and not self.transport.is_closing():
            self._arm_head_deadline()

    def connection_lost(self, exc: Exception | None) -> None:
        if self._head_deadline is not None:
            self._head_deadline.cancel()
        super().connection_lost(exc)


class _Unauthorized(Exception):
    def __init__(self, status: int) -> None:
        self.status = status


def cookie_name(request: Request) -> str:
    """The session cookie's name: `__Host-` prefixed under TLS (the only one read there), plain over HTTP."""
    return SECURE_COOKIE if request.url.scheme == "https" else COOKIE


def create_app(store: LabelStore, max_body_bytes: int = MAX_BODY_BYTES,
               body_timeout: float = BODY_TIMEOUT_SECONDS) -> Starlette:
    """The ASGI app over one label store; it serves each annotator the oldest queued batch they can still label
    (every policy's latest `human_eval_tasks` batch is queued)."""
    templates = Jinja2Templates(directory=str(HERE / "templates"))

    def annotator(request: Request, *, api: bool) -> str:
        if api:
            header = request.headers.get("authorization", "")
            token = header[7:].strip() if header.lower().startswith("bearer ") else ""
        else:
            token = request.cookies.get(cookie_name(request), "")
        if not token:
            raise _Unauthorized(401)
        name = store.annotator_for_token(token)
        if name is None:
            raise _Unauthorized(403)
        return name

    def page(request: Request, name: str, context: dict[str, Any], status: int = 200) -> Response:
        return templates.TemplateResponse(request, name, context, status_code=status)

    def guidelines_page(request: Request, who: str, batch: str, status: int = 200) -> Response:
        paragraphs = [block.strip() for block in store.guidelines(batch).split("\n\n") if block.strip()]
        return page(request, "guidelines.html", {"annotator": who, "paragraphs": paragraphs, "batch": batch,
                                                  "acknowledged": store.has_acknowledged(who, batch)}, status)

    def require_guidelines(who: str, task_id: str | None = None) -> None:
        """Labels count as given under the batch's guidelines only if the annotator was shown them first (the
        batch of the task labelled, or the one served now)."""
        batch = store.batch_of(task_id) if task_id else store.active_batch(who)
        if batch is not None and not store.has_acknowledged(who, batch):
            raise LabelError(f"read batch {batch}'s guidelines and content warning first (GET /api/guidelines, "
                             "then POST /api/guidelines with its batch; in a browser, the page before the first "
                             "pair)", 409)

    def label_page(request: Request, who: str, message: str | None = None, status: int = 200) -> Response:
        batch = store.active_batch(who)
        if batch is None:
            return page(request, "empty.html", {"annotator": who}, status)
        if not store.has_acknowledged(who, batch):  # the content warning and guidelines come before any pair
            return guidelines_page(request, who, batch)
        task = store.next_task(who, batch)
        progress = store.progress(batch)
        return page(request, "label.html", {
            "annotator": who, "task": task, "progress": progress, "mine": store.labelled_by(who, batch),
            "message": message,
        }, status)

    async def index(request: Request) -> Response:
        return label_page(request, annotator(request, api=False))

    async def guidelines(request: Request) -> Response:
        who = annotator(request, api=False)
        batch = store.active_batch(who)
        if batch is None:
            return page(request, "empty.html", {"annotator": who})
        return guidelines_page(request, who, batch)

    async def acknowledge(request: Request) -> Response:
        who = annotator(request, api=False)
        batch, shown = store.active_batch(who), str((await request.form()).get("batch", ""))
        if batch is None:
            return RedirectResponse("/", status_code=303)
        if shown != batch:  # a new batch (other guidelines) became active after the page was shown
            return guidelines_page(request, who, batch, 409)
        store.acknowledge(who, batch)
        return RedirectResponse("/", status_code=303)

    async def login_form(request: Request) -> Response:
        return page(request, "login.html", {"message": None})

    async def login(request: Request) -> Response:
        """Two steps, so a link cannot sign anyone in unawares (login CSRF): a token first gets a page naming
        its account, and only the press of its button (`confirm=yes`) sets the cookie."""
        form = await request.form()
        token = str(form.get("token", "")).strip()
        if not token:
            return page(request, "login.html", {"message": "Enter your access token."}, 401)
        name = store.annotator_for_token(token)
        if name is None:
            return page(request, "login.html", {"message": "That token is not valid."}, 403)
        if form.get("confirm") != "yes":
            return page(request, "login_confirm.html", {"name": name, "token": token})
        response = RedirectResponse("/", status_code=303)
        response.set_cookie(cookie_name(request), token, httponly=True, samesite="strict", max_age=30 * 24 * 3600,
                            secure=request.url.scheme == "https", path="/")
        return response

    async def logout(request: Request) -> Response:
        response = RedirectResponse("/login", status_code=303)
        response.delete_cookie(cookie_name(request), path="/", secure=request.url.scheme == "https")
        return response

    async def submit_form(request: Request) -> Response:
        who = annotator(request, api=False)
        form = await request.form()
        action = str(form.get("action", "label"))
        task_id = str(form.get("task_id", ""))
        try:
            require_guidelines(who, task_id or None)
            if action == "skip":
                store.skip(who, task_id)
            else:
                store.submit(who, task_id, str(form.get("choice", "")), str(form.get("comment", "")))
        except LabelError as error:
            return label_page(request, who, str(error), error.status)
        return RedirectResponse("/", status_code=303)

    async def api_next(request: Request) -> Response:
        who = annotator(request, api=True)
        try:
            require_guidelines(who)
        except LabelError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        batch = store.active_batch(who)
        task = None if batch is None else store.next_task(who, batch)
        if task is None:
            return Response(status_code=204)
        return JSONResponse(task.blinded())

    async def api_label(request: Request) -> Response:
        who = annotator(request, api=True)
        try:
            body = await _json_object(request, max_body_bytes)
            task_id, choice, comment = (_text(body, name) for name in ("task_id", "choice", "comment"))
            require_guidelines(who, task_id or None)
            label, created = store.submit(who, task_id, choice, comment)
        except LabelError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        return JSONResponse({"label_id": label.label_id, "task_id": label.task_id, "choice": label.choice.value,
                             "created": created}, status_code=201 if created else 200)

    async def api_skip(request: Request) -> Response:
        who = annotator(request, api=True)
        try:
            body = await _json_object(request, max_body_bytes)
            task_id = _text(body, "task_id")
            require_guidelines(who, task_id or None)
            store.skip(who, task_id)
        except LabelError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        return Response(status_code=204)

    async def api_guidelines(request: Request) -> Response:
        who = annotator(request, api=True)
        batch = store.active_batch(who)
        return JSONResponse({"batch": batch, "guidelines": None if batch is None else store.guidelines(batch),
                             "acknowledged": batch is not None and store.has_acknowledged(who, batch)})

    async def api_acknowledge(request: Request) -> Response:
        who = annotator(request, api=True)
        try:
            shown = _text(await _json_object(request, max_body_bytes), "batch")
        except LabelError as error:
            return JSONResponse({"error": str(error)}, status_code=error.status)
        batch = store.active_batch(who)
        if batch is None or shown != batch:
            return JSONResponse({"error": f"batch {shown!r} is not the active batch ({batch}): read its "
                                          "guidelines again"}, status_code=409)
        store.acknowledge(who, batch)
        return Response(status_code=204)

    async def api_progress(request: Request) -> Response:
        who = annotator(request, api=True)
        batch = store.active_batch(who)
        if batch is None:
            return JSONResponse({"batch": None})
        progress = store.progress(batch)
        return JSONResponse({"batch": batch, "tasks": progress.tasks, "overlap": progress.overlap,
                             "labels": progress.labels, "required_labels": progress.required_labels,
                             "complete": progress.complete, "mine": store.labelled_by(who, batch)})

    async def healthz(request: Request) -> Response:
        return PlainTextResponse("ok")

    async def unauthorized(request: Request, error: Exception) -> Response:
        assert isinstance(error, _Unauthorized)
        if request.url.path.startswith("/api/"):
            message = "missing bearer token" if error.status == 401 else "invalid token"
            return JSONResponse({"error": message}, status_code=error.status)
        message = "Sign in with your access token." if error.status == 401 else "That token is not valid."
        response = page(request, "login.html", {"message": message}, error.status)
        if error.status == 403:
            response.delete_cookie(cookie_name(request), path="/", secure=request.url.scheme == "https")
        return response

    return Starlette(
        routes=[
            Route("/", index), Route("/labels", submit_form, methods=["POST"]),
            Route("/guidelines", guidelines), Route("/guidelines", acknowledge, methods=["POST"]),
            Route("/login", login_form), Route("/login", login, methods=["POST"]),
            Route("/logout", logout, methods=["POST"]),
            Route("/api/next", api_next), Route("/api/labels", api_label, methods=["POST"]),
            Route("/api/skip", api_skip, methods=["POST"]), Route("/api/progress", api_progress),
            Route("/api/guidelines", api_guidelines), Route("/api/guidelines", api_acknowledge, methods=["POST"]),
            Route("/healthz", healthz), Mount("/static", StaticFiles(directory=str(HERE / "static")), name="static"),
        ],
        middleware=[Middleware(_SecurityHeaders),
                    Middleware(_RequestLimits, max_body_bytes=max_body_bytes, body_timeout=body_timeout),
                    Middleware(_SameOrigin)],
        exception_handlers={_Unauthorized: unauthorized},
    )


async def _json_object(request: Request, max_body_bytes: int) -> dict[str, Any]:
    """The request body as a JSON object, or a LabelError saying what is wrong with it: 413 past the size limit
    (read in chunks, so a 100 MB body is never held), 400 for anything that is not a flat, valid JSON object."""
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > max_body_bytes:
            raise LabelError(f"body is over the {max_body_bytes:,}-byte limit", 413)
        chunks.append(chunk)
    try:
        body = json.loads(b"".join(chunks))
    except RecursionError:
        raise LabelError("body is nested too deeply", 400) from None
    except ValueError:
        raise LabelError("body must be JSON", 400) from None
    if not isinstance(body, dict):
        raise LabelError("body must be a JSON object", 400)
    for key, value in body.items():
        try:
            f"{key}{value}".encode()
        except UnicodeEncodeError:
            raise LabelError(f"field {key!r} is not valid Unicode (a lone surrogate?)", 400) from None
    return body


def _text(body: dict[str, Any], field: str) -> str:
    """A string field of a JSON body ("" when absent or null): a list or number is refused by name, never stored as
    its Python repr."""
    value = body.get(field)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise LabelError(f"field {field!r} must be a string, got {type(value).__name__}", 400)
    return value


def serve(
    store: LabelStore, host: str, port: int, max_body_bytes: int = MAX_BODY_BYTES,
    tls: tuple[Path, Path] | None = None, forwarded_allow_ips: str | None = None,
    timeouts: tuple[float, float] = (HEADER_TIMEOUT_SECONDS, BODY_TIMEOUT_SECONDS),
) -> None:
    """Run the app until interrupted (uvicorn, one process: SQLite serialises the writes anyway).

    With `tls` (certificate, key) it serves HTTPS and its cookie is `Secure`; beyond localhost without TLS,
    tokens and labels would cross the network in clear, which it says loudly. Behind a load balancer that ends
    TLS, `forwarded_allow_ips` (the balancer's addresses) makes the app trust its X-Forwarded-Proto and -For, so
    the cookie is still `Secure` and logs show the annotators' addresses. `timeouts`: seconds a client has to
    send a request's head, then its body.
    """
    if tls is None and forwarded_allow_ips is None and host not in ("127.0.0.1", "localhost", "::1"):
        print(f"WARNING: serving on {host} without TLS: tokens and labels cross the network in clear; "
              "pass --tls-cert and --tls-key", file=sys.stderr, flush=True)
    certificate, key = tls or (None, None)
    if tls is None and forwarded_allow_ips is None:
        print("WARNING: over plain HTTP the session cookie cannot be __Host- prefixed: any other service on this "
              "host (another port) can set it and sign a browser in as someone else; serve with TLS for a team",
              file=sys.stderr, flush=True)
    header_timeout, body_timeout = timeouts
    protocol = type("HeaderDeadlineH11", (_HeaderDeadlineH11,), {"header_timeout": header_timeout})
    uvicorn.run(create_app(store, max_body_bytes, body_timeout), host=host, port=port, log_level="info",
                ssl_certfile=certificate and str(certificate), ssl_keyfile=key and str(key),
                proxy_headers=forwarded_allow_ips is not None, forwarded_allow_ips=forwarded_allow_ips,
                http=protocol, h11_max_incomplete_event_size=MAX_HEADER_BYTES,
                limit_concurrency=MAX_CONNECTIONS, timeout_keep_alive=5)
