"""``execute`` for the emulator: VKScript run for real, in an embedded JavaScript engine.

VKScript is JavaScript-like (``var``, ``if``/``while``, literals, ``.length``, ``push``,
``slice``, ``parseInt``, ``return``) with two additions, which are rewritten before the code
runs in QuickJS (the ``quickjs`` package):

* ``API.section.method({...})`` → a call back into the emulator's method handlers;
* ``expr@.field`` → the field of every element of an array.

What the real ``execute`` does and the emulator reproduces (see the README's emulator part):

* at most :data:`MAX_CALLS` API calls; the next one fails the script with error 13 (VK's exact
  behaviour for a 26th call is undocumented: the crawler must never make one);
* a failing inner call evaluates to ``false`` and adds ``{method, error_code, error_msg}`` to
  ``execute_errors``, in call order; the script goes on;
* a script that does not compile → error 12; one that throws (for instance ``.slice`` on a
  ``false``) or runs too long → error 13; user functions are not part of VKScript → error 12;
* a result over :data:`MAX_BYTES` (5 MB) → error 13 "response size is too big";
* ``Args.name`` holds the other request parameters, as strings.

Not emulated: ``+`` joining two arrays (JavaScript would make a string of them) fails with
error 13 — join arrays with ``push``.

Limits of this emulation: the rewrite is textual, so ``API.`` and ``@.`` must not appear
inside string literals of the script; VK's 1000-operation limit is approximated by a time
limit.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import quickjs

MAX_CALLS = 25
MAX_BYTES = 5 * 1024 * 1024
# Loop iterations per script: stands in for VK's limit of operations (QuickJS cannot call
# back into Python under a time limit, so loops are counted instead).
MAX_ITERATIONS = 10_000

_API_CALL = re.compile(r"\bAPI\.([A-Za-z]+)\.([A-Za-z]+)\s*\(")
_PLUCK = re.compile(r"@\.([A-Za-z_]\w*)")
_FORBIDDEN = re.compile(r"\bfunction\b|=>|\b__api\b|\b__pluck\b|\bArgs\s*=[^=]")
_WHILE = re.compile(r"\bwhile\s*\(")
_PRELUDE = """
var __iterations = 0;
function __tick() {
  __iterations += 1;
  if (__iterations > MAX_ITERATIONS) throw new RangeError("too many operations");
  return true;
}
// VKScript's `+` joins arrays; JavaScript would turn them into a string. Not emulated: it
// fails loudly (error 13) so that no script relies on it. Join arrays with push.
Array.prototype.toString = function () {
  throw new TypeError("+ on arrays is not emulated: join arrays with push");
};
function __pluck(list, name) {
  if (!Array.isArray(list)) throw new TypeError("@. needs an array");
  return list.map(function (x) { return x === null || x === undefined ? null : x[name]; });
}
"""


class ScriptError(Exception):
    """The whole ``execute`` fails with this VK error (12 or 13)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


@dataclass
class ExecuteResult:
    response: Any
    errors: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # inner methods, in order


# An inner call: (method, params as strings) → response, or raises an error with
# ``code`` and ``message`` attributes (the emulator's ApiError).
InnerCall = Callable[[str, dict[str, str]], Any]


def translate(code: str) -> str:
    """VKScript → a JavaScript expression that evaluates to the script's JSON text."""
    if _FORBIDDEN.search(code):
        raise ScriptError(12, "Unable to compile code: functions are not allowed")
    body = _API_CALL.sub(lambda m: f'__api("{m.group(1)}.{m.group(2)}", ', code)
    body = _guard_loops(_pluck_rewrite(body))
    return f"JSON.stringify((function () {{ {body}\n}})())"


def _guard_loops(code: str) -> str:
    """``while (c)`` → ``while (__tick() && (c))``: every iteration is counted."""
    out, pos = [], 0
    for m in _WHILE.finditer(code):
        if m.start() < pos:
            continue
        depth, i = 1, m.end()
        while i < len(code) and depth:
            depth += {"(": 1, ")": -1}.get(code[i], 0)
            i += 1
        if depth:
            raise ScriptError(12, "Unable to compile code: unbalanced while condition")
        out.append(f"{code[pos : m.start()]}while (__tick() && ({code[m.end() : i - 1]}))")
        pos = i
    return "".join(out) + code[pos:]


def _pluck_rewrite(code: str) -> str:
    """``a.b[0]@.id`` → ``__pluck(a.b[0], "id")``: the operand is the longest expression of
    names, dots, calls and brackets ending right before ``@.``."""
    while (m := _PLUCK.search(code)) is not None:
        start = _operand_start(code, m.start())
        operand = code[start : m.start()]
        if not operand.strip():
            raise ScriptError(12, "Unable to compile code: @. without an array")
        code = f'{code[:start]}__pluck({operand}, "{m.group(1)}"){code[m.end() :]}'
    return code


def _operand_start(code: str, end: int) -> int:
    i = end
    while i > 0:
        ch = code[i - 1]
        if ch in ")]":
            depth, close = 0, ch
            open_ = "(" if close == ")" else "["
            while i > 0:
                i -= 1
                if code[i] == close:
                    depth += 1
                elif code[i] == open_:
                    depth -= 1
                    if depth == 0:
                        break
        elif ch.isalnum() or ch in "_$.":
            i -= 1
        else:
            break
    return i


def _to_param(value: Any) -> str:
    """VK receives every parameter as text: lists comma-joined, booleans as 1/0."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, list):
        return ",".join(_to_param(v) for v in value)
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def run(
    code: str,
    args: dict[str, str],
    call: InnerCall,
    *,
    max_calls: int = MAX_CALLS,
    max_bytes: int = MAX_BYTES,
) -> ExecuteResult:
    """Run a VKScript program; raises :class:`ScriptError` when the whole call fails."""
    result = ExecuteResult(response=None)
    script = translate(code)
    ctx = quickjs.Context()
    ctx.set_memory_limit(256 * 1024 * 1024)

    def api(method: str, params_json: str) -> str:
        if len(result.calls) >= max_calls:
            raise ScriptError(
                13, f"Runtime error occurred during code invocation: too many API calls "
                f"(more than {max_calls})",
            )  # fmt: skip
        result.calls.append(method)
        raw = json.loads(params_json) if params_json else {}
        if not isinstance(raw, dict):
            raw = {}
        params = {str(k): _to_param(v) for k, v in raw.items()}
        try:
            return json.dumps(call(method, params), ensure_ascii=False)
        except Exception as exc:  # an ApiError: false + one execute_errors entry
            code_ = getattr(exc, "code", None)
            if code_ is None:
                raise
            result.errors.append(
                {"method": method, "error_code": code_, "error_msg": getattr(exc, "message", "")}
            )
            return "false"

    failure: list[ScriptError] = []

    def guarded(method: str, params_json: str = "") -> str:
        try:
            return api(method, params_json)
        except ScriptError as exc:
            failure.append(exc)
            raise

    ctx.add_callable("__api_raw", guarded)
    ctx.eval(_PRELUDE.replace("MAX_ITERATIONS", str(MAX_ITERATIONS)))
    ctx.eval(
        "var __api = function (method, params) {"
        " var text = JSON.stringify(params === undefined ? {} : params);"
        " return JSON.parse(__api_raw(method, text)); };"
    )
    ctx.set("__args", json.dumps(args, ensure_ascii=False))
    ctx.eval("var Args = JSON.parse(__args);")
    try:
        text = ctx.eval(script)
    except quickjs.JSException as exc:
        if failure:
            raise failure[0] from None
        message = str(exc).splitlines()[0] if str(exc) else "error"
        if message.startswith("SyntaxError"):
            raise ScriptError(12, f"Unable to compile code: {message}") from None
        raise ScriptError(
            13, f"Runtime error occurred during code invocation: {message}"
        ) from None
    if text is None:  # `return;` or no return: VK answers null
        return result
    if len(text.encode("utf-8")) > max_bytes:
        raise ScriptError(
            13, "Runtime error occurred during code invocation: response size is too big"
        )
    result.response = json.loads(text)
    return result
