"""JSON error responses, and the middleware that turns every failure into one (never a traceback)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

import asyncpg
import structlog
from aiohttp import web

from shared.errors import ObsflowError, PermanentError, TransientError
from shared.failures import describe, is_transient

log = structlog.get_logger()

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
RETRY_AFTER_S = 5  # what a 503 asks clients to wait: PostgreSQL and RabbitMQ restart in seconds


class HttpRefusal(ObsflowError):
    """A request refused with a 4xx/5xx status, a stable code and a message that says what to do."""

    def __init__(self, status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.headers = dict(headers or {})


def json_error(
    status: int, code: str, message: str, *, headers: Mapping[str, str] | None = None, **details: object
) -> web.Response:
    """`{"error": {"code", "message", ...details}}` with `status`."""
    return web.json_response({"error": {"code": code, "message": message, **details}}, status=status, headers=headers)


async def _refuse(request: web.Request, refusal: HttpRefusal) -> web.StreamResponse:
    response = json_error(refusal.status, refusal.code, str(refusal), headers=refusal.headers)
    if refusal.status == 408 and request.protocol is not None:
        # The client stopped sending its body: answer, then close, rather than wait (aiohttp would linger for the
        # rest of the body) on a client that may never send another byte.
        response.force_close()
        await response.prepare(request)
        await response.write_eof()
        request.protocol.force_close()
    return response


def _connection_reset(request: web.Request, error: ConnectionResetError) -> web.Response:
    """A reset connection: the client's own (it went away mid-request), or a server's behind us (an outage)."""
    transport = request.transport
    if transport is None or transport.is_closing():
        # The client went away mid-request (aiohttp reports a lost connection this way): nothing to tell anyone.
        log.info("http_client_gone", path=request.path, error=str(error))
        return json_error(400, "client_gone", "the connection was lost before the request was complete; send it again")
    # The client is still there: a server behind us reset its connection (PostgreSQL shutting down while the handler
    # connected to it). An outage, said as one.
    log.warning("http_backend_unavailable", path=request.path, error=describe(error))
    return _unavailable("a database or broker this request needs is unreachable right now; try again shortly")


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Known errors become 4xx/503 with their message; anything else a logged 500 with no internals."""
    try:
        return await handler(request)
    except HttpRefusal as e:
        return await _refuse(request, e)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        response = json_error(e.status, e.reason.lower().replace(" ", "_"), e.text or e.reason)
        if "Allow" in e.headers:  # RFC 9110: a 405 names the methods the resource has
            response.headers["Allow"] = e.headers["Allow"]
        return response
    except asyncpg.DataError as e:
        # PostgreSQL refused a value the request carried (a NUL character, a number out of range): the request is
        # at fault, whichever handler passed the value on, so never a 500.
        return json_error(400, "bad_request", f"a value in this request cannot be used: {e}; "
                          "text may not contain NUL characters and numbers must fit in 64 bits")
    except TransientError as e:
        return _unavailable(f"{e}; try again shortly")
    except PermanentError as e:
        return json_error(400, "bad_request", str(e))
    except ObsflowError as e:
        return json_error(400, "bad_request", str(e))
    except ConnectionResetError as e:
        return _connection_reset(request, e)
    except Exception as e:  # the HTTP edge: log the fault for operators, tell the user nothing internal
        if is_transient(e):  # a driver's own error for an outage (a refused connection to PostgreSQL)
            log.warning("http_backend_unavailable", path=request.path, error=describe(e))
            return _unavailable("a database or broker this request needs is unreachable right now; try again shortly")
        log.exception("http_unhandled_error", path=request.path, error=repr(e))
        return json_error(500, "internal", "the server failed to handle this request; the operators have a log entry")


def _unavailable(message: str) -> web.Response:
    return json_error(503, "unavailable", message, headers={"Retry-After": str(RETRY_AFTER_S)})
