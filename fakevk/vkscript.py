"""``execute`` for the emulator: VKScript run for real, in an embedded JavaScript engine.

VKScript is JavaScript-like (``var``, ``if``/``while``, literals, ``.length``, ``push``,
``slice``, ``parseInt``, ``return``) with two additions, which are rewritten before the code
runs in QuickJS (the ``quickjs`` package):

* ``API.section.method({...})`` → a call back into the emulator's method handlers;
* ``expr@.field`` → the field of every element of an array.

What the real ``execute`` does and the emulator reproduces (docs/topics/emulator.md):

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

Speed: an answer of 25 pages is megabytes of JSON; parsed by QuickJS, written again by
``JSON.stringify`` and parsed and written once more by Python, it would make the emulator, not
the crawler, what benchmarks measure. So the script sees each API answer through proxies (see
``_ANSWERS``): its comments and authors are parsed only when the script looks into one, and an
answer the script did not change is written as a marker that Python replaces with the JSON it
sent. That JSON is what ``JSON.stringify`` would have written (for data
:func:`.jsontext.plain` accepts; other answers are handed to the script as plain JSON), so the
answer is byte for byte the same. A script sees no difference short of freezing an answer and
then changing it (an error's message may differ).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import quickjs

from .jsontext import (
    PART_PREFIX,
    encode,
    encode_parts,
    join_parts,
    marker_pattern,
    marker_prefix,
    splice,
)

MAX_CALLS = 25
MAX_BYTES = 5 * 1024 * 1024
# Loop iterations per script: stands in for VK's limit of operations (QuickJS cannot call
# back into Python under a time limit, so loops are counted instead).
MAX_ITERATIONS = 10_000

_API_CALL = re.compile(r"\bAPI\.([A-Za-z]+)\.([A-Za-z]+)\s*\(")
_PLUCK = re.compile(r"@\.([A-Za-z_]\w*)")
_FORBIDDEN = re.compile(r"\bfunction\b|=>|\b__api\w*|\b__pluck\b|\bArgs\s*=[^=]")
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
# API.x.y(params) → the answer, which (when `exact`) the script sees through proxies that mark
# the call changed when anything in it changes, or when one of its objects is stored into an
# answer (it could be changed through there). The comments and authors in it are parts, empty
# objects until looked into (TEXT: which part), then fetched from Python and parsed: a page of
# 100 comments is rarely read past its first and last. Once the script has returned (`finishing`),
# JSON.stringify asks each proxy for its toJSON: the marker for an unchanged answer (Python
# puts the answer's JSON there), else the object itself, all its parts parsed first. Objects
# the script put into an answer stay its own ("theirs") and are never wrapped, so
# `a.x = o; a.x === o` holds. Weak maps are slow in QuickJS: only objects the script reaches
# get a proxy and entries in them.
_ANSWERS = """
var __api = (function (exact, answerMark, partMark, fetch) {
  var R = Reflect, describe = Reflect.getOwnPropertyDescriptor, parse = JSON.parse;
  var TEXT = Symbol("part");
  var proxies = new WeakMap(), callOf = new WeakMap(), mine = new WeakSet();
  var theirs = new WeakSet(), roots = [], parts = [], changed = [];
  var calls = 0, finishing = false;
  function isObject(v) { return typeof v === "object" && v !== null; }
  function load(target) {  // a part's own properties, as JSON.parse makes them
    var part = target[TEXT];
    if (part === undefined) return;
    delete target[TEXT];
    var value = parse(fetch(part[0], part[1])), keys = R.ownKeys(value);
    for (var i = 0; i < keys.length; i++) {
      R.defineProperty(target, keys[i], describe(value, keys[i]));
    }
  }
  function loadAll(call) {  // before the raw objects of a call are seen
    var list = parts[call];
    for (var i = 0; i < list.length; i++) load(list[i]);
    parts[call] = [];
  }
  function wrap(target, call) {
    var proxy = proxies.get(target);
    if (proxy === undefined) {
      proxy = new Proxy(target, handler);
      proxies.set(target, proxy);
      callOf.set(target, call);
      callOf.set(proxy, call);
      mine.add(proxy);
    }
    return proxy;
  }
  // What the script gets for a property of an answer's object: the answer's own objects
  // wrapped, but a frozen property as it is (a proxy must report those unchanged).
  function seen(target, key, value) {
    if (!isObject(value) || mine.has(value) || theirs.has(value)) return value;
    var d = describe(target, key);
    if (d !== undefined && d.value === value && (d.writable || d.configurable)) {
      return wrap(value, callOf.get(target));
    }
    loadAll(callOf.get(target));
    return value;
  }
  function touch(target, value) {
    changed[callOf.get(target)] = true;
    if (isObject(value)) {
      if (mine.has(value)) changed[callOf.get(value)] = true;
      else theirs.add(value);
    }
  }
  function written(target) {
    var call = callOf.get(target);
    if (roots[call] === target && !changed[call]) return answerMark + call + "@";
    loadAll(call);
    return target;
  }
  var handler = {
    get: function (target, key, receiver) {
      load(target);
      var value = R.get(target, key, receiver);
      if (finishing && key === "toJSON" && value === undefined) {
        return function () { return written(target); };
      }
      return seen(target, key, value);
    },
    getOwnPropertyDescriptor: function (target, key) {
      load(target);
      var d = describe(target, key);
      if (d !== undefined && "value" in d) d.value = seen(target, key, d.value);
      return d;
    },
    has: function (target, key) { load(target); return R.has(target, key); },
    ownKeys: function (target) { load(target); return R.ownKeys(target); },
    set: function (target, key, value) {
      load(target);
      touch(target, value);
      return R.set(target, key, value);
    },
    defineProperty: function (target, key, d) {
      load(target);
      touch(target, d.value);
      return R.defineProperty(target, key, d);
    },
    deleteProperty: function (target, key) {
      load(target);
      touch(target);
      return R.deleteProperty(target, key);
    },
    setPrototypeOf: function (target, p) {
      load(target);
      touch(target, p);
      return R.setPrototypeOf(target, p);
    },
    preventExtensions: function (target) {
      load(target);
      touch(target);
      return R.preventExtensions(target);
    }
  };
  var api = function (method, params) {
    var text = JSON.stringify(params === undefined ? {} : params);
    var call = calls;
    calls += 1;
    var raw = __api_raw(method, text);
    if (!exact) return JSON.parse(raw);
    // The answer with a marker for each part: its kind (o, a, v), its number.
    var lazy = [];
    var answer = JSON.parse(raw, function (k, v) {
      if (typeof v !== "string" || v.indexOf(partMark) !== 0) return v;
      var kind = v.charAt(partMark.length), n = Number(v.slice(partMark.length + 1, -1));
      if (kind === "v") return parse(fetch(call, n));
      var part = kind === "a" ? [] : {};
      part[TEXT] = [call, n];
      lazy.push(part);
      return part;
    });
    if (!isObject(answer)) return answer;
    roots[call] = answer;
    parts[call] = lazy;
    return wrap(answer, call);
  };
  api.finishing = function (value) { finishing = exact; return value; };
  return api;
})(EXACT, ANSWER_MARK, PART_MARK, __api_part);
"""
_ANSWER = marker_pattern("a")


class ScriptError(Exception):
    """The whole ``execute`` fails with this VK error (12 or 13)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(code, message)
        self.code = code
        self.message = message


class _Answer:
    """An inner call's answer as :func:`.jsontext.encode_parts` split it."""

    def __init__(self, envelope: bytes, parts: list[bytes]) -> None:
        self.envelope = envelope
        self.parts = parts

    @functools.cached_property
    def json(self) -> bytes:
        return join_parts(self.envelope, self.parts)


@dataclass
class ExecuteResult:
    text: str | None = None  # the script's result as JSON, unchanged answers as markers
    errors: list[dict[str, Any]] = field(default_factory=list)
    calls: list[str] = field(default_factory=list)  # inner methods, in order
    answers: list[_Answer | None] = field(default_factory=list)  # by call (None: it failed)

    def expand(self, data: bytes) -> bytes:
        """``data`` (JSON holding the parsed ``text``) with each marker replaced by the JSON
        of its answer."""
        return splice(data, _ANSWER, self._answer_json) if self.answers else data

    def _answer_json(self, call: int) -> bytes:
        answer = self.answers[call]
        assert answer is not None  # a failed call is false, never a marker
        return answer.json

    @property
    def response(self) -> Any:
        """The script's result."""
        return None if self.text is None else json.loads(self.expand(self.text.encode()))


# An inner call: (method, params as strings) → response, or raises an error with
# ``code`` and ``message`` attributes (the emulator's ApiError).
InnerCall = Callable[[str, dict[str, str]], Any]


def translate(code: str) -> str:
    """VKScript → a JavaScript expression that evaluates to the script's JSON text."""
    if _FORBIDDEN.search(code):
        raise ScriptError(12, "Unable to compile code: functions are not allowed")
    body = _API_CALL.sub(lambda m: f'__api("{m.group(1)}.{m.group(2)}", ', code)
    body = _guard_loops(_pluck_rewrite(body))
    # JSON.stringify is looked up before the script runs, so a script cannot replace it.
    return f"JSON.stringify(__api.finishing((function () {{ {body}\n}})()))"


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
    exact_answers: bool = False,
) -> ExecuteResult:
    """Run a VKScript program; raises :class:`ScriptError` when the whole call fails.

    ``exact_answers``: ``call`` answers with data that :func:`.jsontext.javascript_exact`
    accepts, so unchanged answers need not be written again (see the module's notes)."""
    result = ExecuteResult()
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
            answer = call(method, params)
        except Exception as exc:  # an ApiError: false + one execute_errors entry
            code_ = getattr(exc, "code", None)
            if code_ is None:
                raise
            result.errors.append(
                {"method": method, "error_code": code_, "error_msg": getattr(exc, "message", "")}
            )
            result.answers.append(None)
            return "false"
        if not exact_answers:
            return encode(answer).decode("utf-8")
        envelope, parts = encode_parts(answer)
        result.answers.append(_Answer(envelope, parts))
        return envelope.decode("utf-8")

    failure: list[ScriptError] = []

    def guarded(method: str, params_json: str = "") -> str:
        try:
            return api(method, params_json)
        except ScriptError as exc:
            failure.append(exc)
            raise

    def part(call: int, n: int) -> str:
        answer = result.answers[int(call)]
        assert answer is not None
        return answer.parts[int(n)].decode("utf-8")

    ctx.add_callable("__api_raw", guarded)
    ctx.add_callable("__api_part", part)
    ctx.eval(_PRELUDE.replace("MAX_ITERATIONS", str(MAX_ITERATIONS)))
    ctx.eval(
        _ANSWERS.replace("EXACT", json.dumps(exact_answers))
        .replace("ANSWER_MARK", json.dumps(marker_prefix("a")))
        .replace("PART_MARK", json.dumps(PART_PREFIX))
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
    data = text.encode("utf-8")
    size = len(data)
    for m in _ANSWER.finditer(data):  # what the markers stand for
        size += len(result._answer_json(int(m.group(1)))) - len(m.group(0))
    if size > max_bytes:
        raise ScriptError(
            13, "Runtime error occurred during code invocation: response size is too big"
        )
    result.text = text
    return result
