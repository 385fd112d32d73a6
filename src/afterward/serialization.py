"""The one JSON codec every backend stores: call payloads and results.

Plain JSON values pass through. A few standard types travel as tagged objects
(``{"$aw": "datetime", "v": "..."}``) so a worker gets them back without importing
anything named in storage: datetime, date, time, UUID, Decimal, bytes. Pydantic models,
dataclasses and enums are stored as their JSON form and rebuilt from the task function's
annotations when the worker calls it.

Refused at encode time, with the argument named: NaN and infinities, NUL characters,
lone surrogates, non-string dict keys and payloads over the size limit. Values that are
not data at all (an open connection, a lock, an arbitrary object) raise ``Unstorable`` so
the caller can decide between running in-process and refusing.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import decimal
import enum
import inspect
import json
import math
import typing
import uuid
from collections.abc import Callable, Mapping
from typing import Any

from afterward.errors import PayloadError

__all__ = [
    "DEFAULT_MAX_PAYLOAD_BYTES",
    "Unstorable",
    "coerce_arguments",
    "decode_payload",
    "decode_value",
    "encode_payload",
    "encode_value",
    "json_text",
]

#: Largest stored payload (arguments of one call, as UTF-8 JSON) unless configured otherwise.
DEFAULT_MAX_PAYLOAD_BYTES = 512 * 1024

_TAG = "$aw"
_dumps: Callable[[Any], str] = json.JSONEncoder(
    ensure_ascii=False, allow_nan=False, separators=(",", ":")
).encode
try:  # optional: the same JSON, several times faster (values were checked by _enc already)
    import orjson

    _slow_dumps = _dumps

    def _fast_dumps(value: Any) -> str:
        try:
            return orjson.dumps(value).decode()
        except TypeError:  # integers past 64 bits: the standard encoder takes any size
            return _slow_dumps(value)

    _dumps = _fast_dumps
    _fast_loads: Callable[[str], Any] = orjson.loads
except ImportError:  # pragma: no cover - orjson comes with the dev extras
    _fast_loads = json.loads


class Unstorable(Exception):
    """A value that is not data: it can only be handed to a function in-process."""

    def __init__(self, where: str, value: Any) -> None:
        super().__init__(where)
        self.where = where
        self.value = value


class _Bad(Exception):
    """A refused value; ``path`` grows as the error unwinds so the message names it."""

    def __init__(self, problem: str, fix: str, value: Any) -> None:
        super().__init__(problem)
        self.problem = problem
        self.fix = fix
        self.value = value
        self.path: list[str] = []


class _NotData(Exception):
    def __init__(self, value: Any) -> None:
        super().__init__()
        self.value = value
        self.path: list[str] = []


def _check_str(s: str) -> str:
    if s.isascii():
        if "\x00" in s:
            raise _Bad("contains a NUL character", "remove '\\x00' from the string", s)
        return s
    try:
        s.encode("utf-8")
    except UnicodeEncodeError:
        raise _Bad(
            "contains a lone surrogate", "encode it properly or pass bytes instead", s
        ) from None
    if "\x00" in s:
        raise _Bad("contains a NUL character", "remove '\\x00' from the string", s)
    return s


def _enc(v: Any) -> Any:
    t = type(v)
    if t is str:
        return _check_str(v)
    if t is int or t is bool or v is None:
        return v
    if t is float:
        if math.isfinite(v):
            return v
        raise _Bad("is not a finite number", "pass a finite float or None", v)
    if t is list or t is tuple:
        out = []
        for i, item in enumerate(v):
            try:
                out.append(_enc(item))
            except (_Bad, _NotData) as e:
                e.path.append(f"[{i}]")
                raise
        return out
    if t is dict:
        return _enc_dict(v)
    return _enc_other(v)


def _enc_dict(v: Mapping[Any, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, item in v.items():
        if type(k) is not str:
            raise _Bad(
                f"has a non-string key {k!r}", "use string keys (JSON objects have only those)", v
            )
        try:
            out[_check_str(k)] = _enc(item)
        except (_Bad, _NotData) as e:
            e.path.append(f"[{k!r}]")
            raise
    if _TAG in out:
        # A user dict that looks like a tag. Stored as pairs: the JSON decoder rebuilds
        # objects innermost first, so a nested object would be read as a tag before
        # the escape around it is seen.
        return {_TAG: "dict", "v": [[k, item] for k, item in out.items()]}
    return out


def _enc_other(v: Any) -> Any:
    if isinstance(v, enum.Enum):
        return _enc(v.value)
    if isinstance(v, bool | int):
        return int(v)
    if isinstance(v, str):
        return _check_str(str(v))
    if isinstance(v, float):
        return _enc(float(v))
    if isinstance(v, dt.datetime):
        return {_TAG: "datetime", "v": v.isoformat()}
    if isinstance(v, dt.date):
        return {_TAG: "date", "v": v.isoformat()}
    if isinstance(v, dt.time):
        return {_TAG: "time", "v": v.isoformat()}
    if isinstance(v, uuid.UUID):
        return {_TAG: "uuid", "v": str(v)}
    if isinstance(v, decimal.Decimal):
        if not v.is_finite():
            raise _Bad("is not a finite Decimal", "pass a finite Decimal or None", v)
        return {_TAG: "decimal", "v": str(v)}
    if isinstance(v, bytes | bytearray | memoryview):
        return {_TAG: "bytes", "v": base64.b64encode(bytes(v)).decode("ascii")}
    if isinstance(v, Mapping):
        return _enc_dict(v)
    if isinstance(v, list | tuple | set | frozenset):
        return _enc(list(v))
    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return _enc_dict({f.name: getattr(v, f.name) for f in dataclasses.fields(v)})
    dump = getattr(v, "model_dump", None)
    if dump is not None and hasattr(type(v), "model_fields"):
        # Pydantic's JSON mode already turns datetimes and UUIDs into strings; the
        # annotation on the task parameter rebuilds the model on the worker side.
        return _enc(dump(mode="json"))
    raise _NotData(v)


def _describe(where: str, e: _Bad | _NotData) -> str:
    return where + "".join(reversed(e.path))


def _short(value: Any) -> str:
    r = repr(value)
    return r if len(r) <= 80 else r[:77] + "..."


def encode_value(value: Any, *, where: str = "value") -> Any:
    """Turn ``value`` into plain JSON data, or raise ``PayloadError``/``Unstorable``."""
    try:
        return _enc(value)
    except _Bad as e:
        raise PayloadError(
            f"{_describe(where, e)} = {_short(e.value)} {e.problem}; {e.fix}."
        ) from None
    except _NotData as e:
        raise Unstorable(_describe(where, e), e.value) from None


def encode_payload(
    func_name: str,
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    *,
    max_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES,
) -> str:
    """Encode one call's arguments as the JSON text a backend stores.

    Raises ``PayloadError`` naming the argument for values JSON cannot hold faithfully,
    and ``Unstorable`` for values that are not data.
    """
    try:
        # map() and no comprehension for absent keywords: on Python 3.11 each comprehension
        # is a function call of its own, a fifth of this function's time for one argument.
        enc_args = list(map(_enc, args))
        enc_kwargs = (
            {
                (k if k.isascii() and "\x00" not in k else _check_key(k, func_name)): _enc(v)
                for k, v in kwargs.items()
            }
            if kwargs
            else {}
        )
    except (_Bad, _NotData):
        # Only on the error path: encode again, naming each argument, to say which one.
        enc_args = [
            encode_value(a, where=f"argument {i} of {func_name}") for i, a in enumerate(args)
        ]
        enc_kwargs = {
            _check_key(k, func_name): encode_value(v, where=f"argument {k!r} of {func_name}")
            for k, v in kwargs.items()
        }
    text = _dumps({"args": enc_args, "kwargs": enc_kwargs})
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    if size > max_bytes:
        biggest = _biggest(args, kwargs, enc_args, enc_kwargs)
        raise PayloadError(
            f"the arguments of {func_name} take {size:,} bytes as JSON, over the "
            f"{max_bytes:,}-byte limit (largest: {biggest}); store large data elsewhere "
            "(a file, object storage, a table) and pass its key, or raise max_payload_bytes."
        )
    return text


def _check_key(k: str, func_name: str) -> str:
    try:
        return _check_str(k)
    except _Bad as e:
        raise PayloadError(f"keyword {k!r} of {func_name} {e.problem}; {e.fix}.") from None


def _biggest(
    args: tuple[Any, ...],
    kwargs: Mapping[str, Any],
    enc_args: list[Any],
    enc_kwargs: dict[str, Any],
) -> str:
    sizes = [(len(_dumps(v)), f"argument {i}") for i, v in enumerate(enc_args)]
    sizes += [(len(_dumps(v)), f"argument {k!r}") for k, v in enc_kwargs.items()]
    size, name = max(sizes)
    return f"{name}, {size:,} bytes"


def _hook(obj: dict[str, Any]) -> Any:
    tag = obj.get(_TAG)
    if tag is None or len(obj) != 2:
        return obj
    v = obj["v"]
    if tag == "datetime":
        return dt.datetime.fromisoformat(v)
    if tag == "date":
        return dt.date.fromisoformat(v)
    if tag == "time":
        return dt.time.fromisoformat(v)
    if tag == "uuid":
        return uuid.UUID(v)
    if tag == "decimal":
        return decimal.Decimal(v)
    if tag == "bytes":
        return base64.b64decode(v)
    if tag == "dict":
        return dict(v) if isinstance(v, list) else v
    return obj


def json_text(value: Any) -> str:
    """Compact JSON of plain data (lists, dicts, strings, numbers, None); orjson if installed."""
    return _dumps(value)


def decode_value(text: str) -> Any:
    """Decode JSON text written by this codec back into Python values."""
    return json.loads(text, object_hook=_hook)


def dumps_value(value: Any, *, where: str = "value") -> str:
    """Encode ``value`` to JSON text (see ``encode_value``)."""
    return _dumps(encode_value(value, where=where))


def decode_payload(text: str) -> tuple[list[Any], dict[str, Any]]:
    """Decode a stored payload into positional and keyword arguments."""
    # Most payloads hold no tagged value; those skip the per-object hook.
    if _TAG in text:
        data = decode_value(text)
    else:
        try:
            data = _fast_loads(text)
        except ValueError:  # e.g. an integer past 64 bits, which orjson refuses
            data = json.loads(text)
    return list(data["args"]), dict(data["kwargs"])


_Adapter = Callable[[Any], Any]
_adapters: dict[Any, tuple[inspect.Signature | None, dict[str, _Adapter]]] = {}


#: Annotations whose values come back from JSON exactly as they were passed: left alone, as a
#: direct call would leave them (validating them would turn an int passed for ``float``
#: into 1.0 and cost a signature bind per job).
_AS_PASSED = frozenset({str, int, float, bool, type(None), None})


def _adapter_for(annotation: Any) -> _Adapter | None:
    if annotation is inspect.Parameter.empty or annotation is Any or _as_passed(annotation):
        return None
    try:
        from pydantic import TypeAdapter
    except ImportError:  # pragma: no cover - pydantic ships with the test extras
        return _plain_adapter(annotation)
    try:
        return TypeAdapter(annotation).validate_python
    except Exception:  # an annotation pydantic cannot model: pass values through unchanged
        return None


def _as_passed(annotation: Any) -> bool:
    try:
        return annotation in _AS_PASSED
    except TypeError:  # an unhashable annotation object
        return False


def _plain_adapter(annotation: Any) -> _Adapter | None:  # pragma: no cover - without pydantic
    if isinstance(annotation, type) and issubclass(annotation, enum.Enum):
        return annotation
    if isinstance(annotation, type) and dataclasses.is_dataclass(annotation):
        cls = annotation
        return lambda v: cls(**v) if isinstance(v, dict) else v
    return None


def _plan(func: Callable[..., Any]) -> tuple[inspect.Signature | None, dict[str, _Adapter]]:
    plan = _adapters.get(func)
    if plan is not None:
        return plan
    try:
        sig = inspect.signature(func)
        hints = typing.get_type_hints(func)
    except (TypeError, ValueError, NameError):
        plan = (None, {})
    else:
        found = {}
        for name in sig.parameters:
            adapter = _adapter_for(hints.get(name, inspect.Parameter.empty))
            if adapter is not None:
                found[name] = adapter
        plan = (sig if found else None, found)
    _adapters[func] = plan
    return plan


def coerce_arguments(
    func: Callable[..., Any], args: list[Any], kwargs: dict[str, Any]
) -> tuple[list[Any], dict[str, Any]]:
    """Rebuild models, dataclasses and enums from the function's parameter annotations."""
    sig, adapters = _plan(func)
    if sig is None:
        return args, kwargs
    bound = sig.bind_partial(*args, **kwargs)
    for name, value in list(bound.arguments.items()):
        adapter = adapters.get(name)
        if adapter is None:
            continue
        kind = sig.parameters[name].kind
        if kind is inspect.Parameter.VAR_POSITIONAL:
            bound.arguments[name] = tuple(adapter(v) for v in value)
        elif kind is inspect.Parameter.VAR_KEYWORD:
            bound.arguments[name] = {k: adapter(v) for k, v in value.items()}
        else:
            bound.arguments[name] = adapter(value)
    return list(bound.args), dict(bound.kwargs)
