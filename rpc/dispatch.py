"""A trio-native JSON-RPC 2.0 dispatcher built on jsonrpcserver's pieces.

jsonrpcserver 5.0.9's `async_dispatch` calls `asyncio.gather` and fails under trio,
so this module does the async part itself and takes the rest from the library: its
error codes, its response types and serializers. Request validation follows
jsonrpcserver's request schema exactly (a unit test checks the two agree on random
input) but is written out by hand, because the schema validator costs about 125 us a
call, more than the rest of a call put together.

Rules:
- Parse errors give -32700, a request of the wrong shape -32600, an unknown method
  -32601, wrong parameters -32602 (unknown, missing or of the wrong JSON type).
- A method raising GossipchatError answers with that error's code and message.
- Any other exception is a bug: it is logged with its traceback and answered with
  -32603; the connection and the daemon carry on.
- Notifications (no id) get no response; a batch answers each of its members.
- Bounds (`RpcLimits`): nesting deeper than MAX_DEPTH levels is refused with -32600
  before any method runs (json's C parser would otherwise raise RecursionError); a
  batch holds at most `max_batch` requests and yields to the event loop between them;
  one response (a whole batch included) holds at most `max_response_bytes`: a single
  answer over it is replaced by a ResponseTooLarge error, and the members of a batch
  after the budget is spent are answered with that error without being run.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import trio
from jsonrpcserver.codes import (
    ERROR_INTERNAL_ERROR,
    ERROR_INVALID_PARAMS,
    ERROR_INVALID_REQUEST,
    ERROR_METHOD_NOT_FOUND,
    ERROR_PARSE_ERROR,
)
from jsonrpcserver.response import (
    ErrorResponse,
    SuccessResponse,
    serialize_error,
    serialize_success,
)
from jsonrpcserver.sentinels import NODATA

from gossipchat.daemon.errors import GossipchatError, ResponseTooLarge

from .jsonline import decode_line
from .limits import MAX_DEPTH, RpcLimits
from .table import METHODS, MethodSpec

log = logging.getLogger(__name__)

Notify = Callable[[str, dict[str, Any]], Awaitable[None]]


async def _no_notify(method: str, params: dict[str, Any]) -> None:
    return None


@dataclass(frozen=True)
class CallContext:
    """What a handler may know of its call: the request id and a notification sink."""

    request_id: Any = None
    notify: Notify = _no_notify


Handler = Callable[[dict[str, Any], CallContext], Awaitable[Any]]

_JSON_TYPE_CHECKS: dict[str, Callable[[Any], bool]] = {
    "string": lambda v: isinstance(v, str),
    "integer": lambda v: type(v) is int,
    "number": lambda v: type(v) in (int, float),
    "boolean": lambda v: type(v) is bool,
    "array": lambda v: isinstance(v, list),
    "object": lambda v: isinstance(v, dict),
}
_REQUEST_KEYS = frozenset({"jsonrpc", "method", "id", "params"})


class _InvalidParams(Exception):
    pass


def is_valid_request(request: Any) -> bool:
    """The same verdict as jsonrpcserver's request-schema.json for one request."""
    if not isinstance(request, dict) or not request.keys() <= _REQUEST_KEYS:
        return False
    if request.get("jsonrpc", None) != "2.0" or type(request.get("jsonrpc")) is not str:
        return False
    if not isinstance(request.get("method"), str):
        return False
    if "id" in request:
        rid = request["id"]
        if not (rid is None or isinstance(rid, str)
                or (isinstance(rid, int | float) and not isinstance(rid, bool))):
            return False
    return "params" not in request or isinstance(request["params"], list | dict)


def nesting_depth_exceeds(value: Any, limit: int) -> bool:
    """True if arrays and objects nest more than `limit` levels deep in value."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children: Any = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return True
        stack.extend((child, depth + 1) for child in children
                     if isinstance(child, dict | list))
    return False


def _encode(value: Any) -> bytes:
    # orjson writes the same compact UTF-8 JSON as json.dumps with these options, about
    # 9x faster (a `status` answer: 3.9 us against 34 us). What it refuses (integers
    # beyond 64 bits, such as a client's request id; non-string keys), json writes.
    try:
        return orjson.dumps(value, option=orjson.OPT_APPEND_NEWLINE)
    except orjson.JSONEncodeError:
        return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def internal_error_bytes() -> bytes:
    """The encoded -32603 answer for a request whose handling failed in our code."""
    return _encode(_error(ERROR_INTERNAL_ERROR, "Internal error",
                          "the daemon failed to answer this request; it is logged", None))


def _error(code: int, message: str, data: Any, rid: Any) -> dict[str, Any]:
    result: dict[str, Any] = serialize_error(
        ErrorResponse(code, message, NODATA if data is None else data, rid)
    )
    return result


def _bind_params(spec: MethodSpec, params: Any) -> dict[str, Any]:
    if params is None:
        params = {}
    if isinstance(params, list):
        if len(params) > len(spec.params):
            raise _InvalidParams(f"{spec.name} takes at most {len(spec.params)} parameters")
        params = {p.name: v for p, v in zip(spec.params, params, strict=False)}
    unknown = sorted(set(params) - {p.name for p in spec.params})
    if unknown:
        raise _InvalidParams(f"{spec.name}: unknown parameter {unknown[0]!r}")
    for p in spec.params:
        if p.name not in params or params[p.name] is None:
            if p.required:
                raise _InvalidParams(f"{spec.name}: missing parameter {p.name!r}")
            params.pop(p.name, None)
            continue
        if not _JSON_TYPE_CHECKS[p.type](params[p.name]):
            raise _InvalidParams(f"{spec.name}: parameter {p.name!r} must be a {p.type}")
    return dict(params)


class Dispatcher:
    """Maps parsed JSON-RPC requests to async handlers, one per method of the table."""

    def __init__(self, handlers: dict[str, Handler], notify: Notify = _no_notify,
                 limits: RpcLimits | None = None) -> None:
        missing = set(METHODS) - set(handlers)
        extra = set(handlers) - set(METHODS)
        if missing or extra:
            raise ValueError(f"handlers do not match the method table: "
                             f"missing {sorted(missing)}, extra {sorted(extra)}")
        self._handlers = handlers
        self._notify = notify
        self.limits = limits or RpcLimits()

    @staticmethod
    def encode(value: Any) -> bytes:
        """One JSON value as a line of UTF-8."""
        return _encode(value)

    async def dispatch_line(self, line: bytes) -> Any:
        """Answer one line as a JSON value: a response, a list for a batch, or None."""
        answer = await self.answer_line(line)
        return None if answer is None else json.loads(answer)

    def _parse(self, line: bytes) -> tuple[Any, bytes | None]:
        """The request value, or the encoded error that answers the line instead."""
        try:
            request = decode_line(line)
        except RecursionError:
            request = None
            too_deep = True
        except (ValueError, UnicodeDecodeError) as exc:
            return None, _encode(_error(ERROR_PARSE_ERROR, "Parse error", str(exc), None))
        else:
            # Each level opens with a bracket: a line with few cannot nest too deep, and
            # counting them (brackets in strings too) costs less than walking the value.
            too_deep = (line.count(b"[") + line.count(b"{") > MAX_DEPTH
                        and nesting_depth_exceeds(request, MAX_DEPTH))
        if too_deep:
            return None, _encode(_error(
                ERROR_INVALID_REQUEST, "Invalid request",
                f"JSON nested more than {MAX_DEPTH} levels deep", None))
        return request, None

    async def answer_line(self, line: bytes) -> bytes | None:
        """Answer one line with the encoded response (None when nothing is owed)."""
        request, refusal = self._parse(line)
        if refusal is not None:
            return refusal
        if not isinstance(request, list):
            response = await self.dispatch_one(request)
            return None if response is None else self._bounded(response)
        if not request:
            return _encode(_error(ERROR_INVALID_REQUEST, "Invalid request", "empty batch",
                                  None))
        limit = self.limits.max_batch
        if len(request) > limit:
            return _encode(_error(
                ERROR_INVALID_REQUEST, "Invalid request",
                f"a batch of {len(request)} requests; at most {limit} per batch", None))
        parts: list[bytes] = []
        spent = 0
        for index, item in enumerate(request):
            if index:
                await trio.lowlevel.checkpoint()  # a batch never holds the loop
            if spent > self.limits.max_response_bytes:
                response = self._over_budget(item)
            else:
                response = await self.dispatch_one(item)
            if response is None:
                continue
            part = self._bounded(response)[:-1]
            spent += len(part)
            parts.append(part)
        if not parts:
            return None
        return b"[" + b",".join(parts) + b"]\n"

    def _over_budget(self, item: Any) -> dict[str, Any] | None:
        if not is_valid_request(item) or "id" not in item:
            return None
        exc = ResponseTooLarge(
            f"this batch's answers passed {self.limits.max_response_bytes} bytes; "
            "this request was not run: send fewer requests per batch")
        return _error(exc.code, exc.message, exc.data, item["id"])

    def _bounded(self, response: dict[str, Any]) -> bytes:
        data = _encode(response)
        if len(data) <= self.limits.max_response_bytes:
            return data
        exc = ResponseTooLarge(
            f"the answer is {len(data)} bytes, over the {self.limits.max_response_bytes} "
            "that one response may hold; ask for less (history: a smaller limit, and "
            "page back with before)")
        return _encode(_error(exc.code, exc.message, exc.data, response.get("id")))

    async def dispatch_one(self, request: Any) -> dict[str, Any] | None:
        """Answer one request object (None for a notification)."""
        if not is_valid_request(request):
            return _error(ERROR_INVALID_REQUEST, "Invalid request",
                          "The request failed schema validation", None)
        notification = "id" not in request
        rid = request.get("id")
        result = await self._call(request["method"], request.get("params"), rid)
        return None if notification else result

    async def _call(self, method: str, params: Any, rid: Any) -> dict[str, Any]:
        spec = METHODS.get(method)
        if spec is None:
            return _error(ERROR_METHOD_NOT_FOUND, "Method not found", method, rid)
        try:
            bound = _bind_params(spec, params)
        except _InvalidParams as exc:
            return _error(ERROR_INVALID_PARAMS, "Invalid params", str(exc), rid)
        try:
            value = await self._handlers[method](bound, CallContext(rid, self._notify))
        except GossipchatError as exc:
            return _error(exc.code, exc.message, exc.data, rid)
        except Exception as exc:
            log.exception("internal error in %s", method)
            return _error(ERROR_INTERNAL_ERROR, "Internal error",
                          f"{type(exc).__name__}: {exc}", rid)
        response: dict[str, Any] = serialize_success(SuccessResponse(value, rid))
        return response
