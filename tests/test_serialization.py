"""The JSON codec: what round-trips through a stored payload, and what is refused and why.

Values go through ``encode_payload`` (what ``add_task``/``enqueue`` store), then
``decode_payload`` and ``coerce_arguments`` (what a worker does before calling the task),
so each test checks what the task function really receives.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import enum
import io
import json
import math
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from afterward.errors import PayloadError
from afterward.serialization import (
    Unstorable,
    coerce_arguments,
    decode_payload,
    decode_value,
    dumps_value,
    encode_payload,
)

NAME = "shop.orders:charge"


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


class Address(BaseModel):
    street: str
    zip_code: str


class Customer(BaseModel):
    id: uuid.UUID
    name: str
    joined: dt.datetime
    address: Address
    tags: list[str] = []


@dataclasses.dataclass
class Line:
    sku: str
    quantity: int
    price: decimal.Decimal


@dataclasses.dataclass
class Order:
    lines: list[Line]
    placed: dt.date


def through_storage(
    func: Callable[..., Any], *args: Any, **kwargs: Any
) -> tuple[list[Any], dict[str, Any]]:
    """What ``func`` receives after its arguments were stored as text and read back."""
    text = encode_payload(NAME, args, kwargs)
    assert isinstance(json.loads(text), dict)  # stored as plain JSON text
    stored_args, stored_kwargs = decode_payload(text)
    return coerce_arguments(func, stored_args, stored_kwargs)


def takes_models(customer: Customer, order: Order, color: Color, level: Level) -> None:
    """A task whose annotations rebuild models, dataclasses and enums."""


def takes_plain(*args: Any, **kwargs: Any) -> None:
    """A task without annotations: values arrive as the codec decodes them."""


def takes_tuple(point: tuple[int, int], names: frozenset[str]) -> None:
    """Containers whose JSON form is a list are rebuilt from the annotation."""


def takes_scalars(ratio: float, count: int, name: str, flag: bool, nothing: None) -> None:
    """Plain JSON types: what was passed arrives, as in a direct call."""


def test_plain_json_types_arrive_exactly_as_they_were_passed() -> None:
    # No validation in between: an int given for ``float`` stays an int, and a string given
    # for ``int`` stays a string, as Starlette's in-memory call would pass them.
    args, kwargs = through_storage(takes_scalars, 1, "7", "x", True, nothing=None)
    assert args == [1, "7", "x", True]
    assert [type(a) for a in args] == [int, str, str, bool]
    assert kwargs == {"nothing": None}
    args, _ = through_storage(takes_scalars, 2.5, 3, "", False, None)
    assert [type(a) for a in args] == [float, int, str, bool, type(None)]


def test_pydantic_models_dataclasses_and_enums_are_rebuilt_from_annotations() -> None:
    customer = Customer(
        id=uuid.uuid4(),
        name="Ada",
        joined=dt.datetime(2024, 5, 1, 12, 30, tzinfo=dt.UTC),
        address=Address(street="1 Main St", zip_code="02139"),
        tags=["vip"],
    )
    order = Order([Line("A-1", 2, decimal.Decimal("9.99"))], dt.date(2024, 5, 2))
    args, kwargs = through_storage(
        takes_models, customer, order, color=Color.BLUE, level=Level.HIGH
    )
    # Keywords that can be positional are bound positionally: the call is the same.
    assert args == [customer, order, Color.BLUE, Level.HIGH]
    assert kwargs == {}
    assert isinstance(args[0], Customer)
    assert isinstance(args[1], Order)
    assert isinstance(args[1].lines[0], Line)
    assert args[1].lines[0].price == decimal.Decimal("9.99")
    assert args[2] is Color.BLUE
    assert args[3] is Level.HIGH


@pytest.mark.parametrize(
    "value",
    [
        dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone(dt.timedelta(hours=-5))),
        dt.datetime(2024, 1, 2, 3, 4, 5, tzinfo=dt.UTC),
        dt.datetime(2024, 1, 2, 3, 4, 5),  # naive stays naive
        dt.date(1999, 12, 31),
        dt.time(23, 59, 58, 1),
        dt.time(8, 0, tzinfo=dt.UTC),
        uuid.UUID("12345678-1234-5678-1234-567812345678"),
        decimal.Decimal("0.1"),
        decimal.Decimal("-1E+30"),
        b"\x00\xff binary \x80",
        "unicode: żółć ✓ 日本",
        "",
        0,
        -(2**62),
        2.5,
        True,
        None,
        [1, [2, [3, {"deep": [None, "x"]}]]],
        {"$aw": "datetime", "v": "not a tag, just user data"},
        {"$aw": "date", "v": "2024-01-01"},  # looks exactly like a tag, stays a dict
        {"outer": {"$aw": "dict", "v": {"$aw": "uuid", "v": "x"}}},
        {"nested": {"when": dt.date(2020, 2, 29), "ids": [uuid.UUID(int=7)]}},
    ],
    ids=repr,
)
def test_standard_values_round_trip_exactly(value: Any) -> None:
    args, kwargs = through_storage(takes_plain, value, key=value)
    assert args == [value]
    assert kwargs == {"key": value}
    assert type(args[0]) is type(value)
    if isinstance(value, dt.datetime | dt.time):
        assert args[0].tzinfo == value.tzinfo


def test_tuples_and_sets_come_back_as_lists_unless_annotated() -> None:
    args, _ = through_storage(takes_plain, (1, 2), {"a"}, frozenset({"b"}))
    assert args == [[1, 2], ["a"], ["b"]]
    args, _ = through_storage(takes_tuple, (1, 2), frozenset({"x", "y"}))
    assert args == [(1, 2), frozenset({"x", "y"})]


def test_enums_without_annotation_arrive_as_their_value() -> None:
    args, _ = through_storage(takes_plain, Color.RED, Level.LOW)
    assert args == ["red", 1]


def test_results_use_the_same_codec() -> None:
    value = {"at": dt.datetime(2024, 1, 1, tzinfo=dt.UTC), "amount": decimal.Decimal("1.50")}
    assert decode_value(dumps_value(value)) == value


# -- refusals -------------------------------------------------------------------------------


def charge(amount: Any = None, note: Any = None) -> None:
    """The task whose arguments the refusal tests store."""


@pytest.mark.parametrize(
    ("kwargs", "where", "problem", "fix"),
    [
        ({"amount": math.nan}, "argument 'amount' of " + NAME, "not a finite number", "finite"),
        ({"amount": math.inf}, "argument 'amount' of " + NAME, "not a finite number", "finite"),
        ({"amount": -math.inf}, "argument 'amount' of " + NAME, "not a finite number", "finite"),
        (
            {"amount": decimal.Decimal("NaN")},
            "argument 'amount' of " + NAME,
            "not a finite Decimal",
            "pass a finite Decimal",
        ),
        (
            {"amount": decimal.Decimal("Infinity")},
            "argument 'amount' of " + NAME,
            "not a finite Decimal",
            "pass a finite Decimal",
        ),
        ({"note": "a\x00b"}, "argument 'note' of " + NAME, "NUL character", "remove '\\x00'"),
        ({"note": "caf\u00e9\x00"}, "argument 'note' of " + NAME, "NUL character", "remove"),
        ({"note": "bad \ud800 half"}, "argument 'note' of " + NAME, "lone surrogate", "bytes"),
        ({"note": {1: "one"}}, "argument 'note' of " + NAME, "non-string key 1", "string keys"),
        (
            {"note": {"items": [{"price": math.nan}]}},
            "argument 'note' of " + NAME + "['items'][0]['price']",
            "not a finite number",
            "finite",
        ),
        ({"note": ["ok", "\ud83d"]}, "argument 'note' of " + NAME + "[1]", "lone surrogate", ""),
        (
            {"note": {"k\x00": 1}},
            "argument 'note' of " + NAME + "['k\\x00']",
            "NUL character",
            "remove",
        ),
    ],
)
def test_values_json_cannot_hold_faithfully_are_refused_by_name(
    kwargs: dict[str, Any], where: str, problem: str, fix: str
) -> None:
    with pytest.raises(PayloadError) as info:
        encode_payload(NAME, (), kwargs)
    message = str(info.value)
    assert message.startswith(where + " = "), message
    assert problem in message
    assert fix in message


def test_positional_arguments_are_named_by_position() -> None:
    with pytest.raises(PayloadError, match=r"^argument 1 of shop\.orders:charge = nan"):
        encode_payload(NAME, ("fine", math.nan), {})


def test_a_bad_keyword_name_is_refused() -> None:
    with pytest.raises(PayloadError, match=r"keyword 'x\\x00' of shop\.orders:charge"):
        encode_payload(NAME, (), {"x\x00": 1})


def test_payload_over_the_limit_names_the_largest_argument_and_the_fix() -> None:
    with pytest.raises(PayloadError) as info:
        encode_payload(NAME, ("small",), {"blob": "x" * 2_000, "n": 1}, max_bytes=1_000)
    message = str(info.value)
    assert "over the 1,000-byte limit" in message
    assert "largest: argument 'blob', 2,002 bytes" in message
    assert "store large data elsewhere" in message
    # Multi-byte characters count as their UTF-8 size.
    with pytest.raises(PayloadError):
        encode_payload(NAME, ("é" * 600,), {}, max_bytes=1_000)
    assert encode_payload(NAME, ("e" * 600,), {}, max_bytes=1_000)


# -- values that are not data -----------------------------------------------------------------


@pytest.fixture
def open_file(tmp_path: Path) -> Iterator[io.TextIOWrapper]:
    with (tmp_path / "f.txt").open("w") as f:
        yield f


@pytest.fixture
def sock() -> Iterator[socket.socket]:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        yield s


def test_a_lock_is_not_data(open_file: io.TextIOWrapper, sock: socket.socket) -> None:
    lock = threading.Lock()
    cases: list[tuple[tuple[Any, ...], dict[str, Any], str, object]] = [
        ((), {"lock": lock}, f"argument 'lock' of {NAME}", lock),
        ((open_file,), {}, f"argument 0 of {NAME}", open_file),
        ((), {"ctx": {"conn": [1, sock]}}, f"argument 'ctx' of {NAME}['conn'][1]", sock),
        ((), {"fn": takes_plain}, f"argument 'fn' of {NAME}", takes_plain),
    ]
    for args, kwargs, where, value in cases:
        with pytest.raises(Unstorable) as info:
            encode_payload(NAME, args, kwargs)
        assert info.value.where == where
        assert info.value.value is value


def test_integers_of_any_size_round_trip() -> None:
    # The fast JSON path handles 64-bit integers only; bigger ones must still come back.
    text = encode_payload("m:f", (2**70, -(2**80), 7), {"n": [2**65]})
    assert decode_payload(text) == ([2**70, -(2**80), 7], {"n": [2**65]})
