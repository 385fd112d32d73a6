"""Task names and resolution: which callables get a stored name, and which names a worker
will turn back into a function (never by importing what storage names).
"""

from __future__ import annotations

import functools
import sys
from pathlib import Path
from shutil import rmtree  # a foreign function re-exported by this (allowed) module

import pytest

from afterward.errors import ConfigurationError
from afterward.registry import Registry, TaskOptions, options_of, storable_name, task
from afterward.retry import RetryPolicy

HERE = __name__


def plain(x: int) -> int:
    return x


@task(max_attempts=2, queue="mail")
def marked() -> None:
    """Allowed to run from storage wherever this module is imported."""


@task
def marked_bare() -> None:
    """``@task`` without options."""


alias = plain  # the same function under another name


class Holder:
    fn = plain

    def method(self) -> None:
        """A method: only a bound call could run it."""

    @staticmethod
    def static() -> None:
        """Reachable by its qualname."""


class CallableObject:
    def __call__(self) -> None:
        """An instance is callable but has no import path."""


def make_closure() -> object:
    def inner() -> None:
        """Defined inside a function."""

    return inner


def test_module_level_functions_get_their_import_path() -> None:
    assert storable_name(plain) == f"{HERE}:plain"
    assert storable_name(marked) == f"{HERE}:marked"
    assert storable_name(Holder.static) == f"{HERE}:Holder.static"
    assert storable_name(rmtree) == "shutil:rmtree"


@pytest.mark.parametrize(
    "func",
    [
        lambda: None,
        make_closure(),
        Holder().method,
        functools.partial(plain, 1),
        CallableObject(),
        len,
        print,
    ],
    ids=["lambda", "closure", "bound method", "partial", "callable object", "builtin", "print"],
)
def test_callables_without_an_import_path_have_no_stored_name(func: object) -> None:
    assert storable_name(func) is None  # type: ignore[arg-type]


def test_a_function_whose_name_now_points_elsewhere_has_no_stored_name() -> None:
    def shadowed() -> None:
        """Renamed below so its qualname looks module-level."""

    shadowed.__module__ = HERE
    shadowed.__qualname__ = "plain"  # the module attribute 'plain' is another function
    assert storable_name(shadowed) is None


def test_register_refuses_what_a_worker_could_not_find() -> None:
    registry = Registry()
    with pytest.raises(ConfigurationError, match="define"):
        registry.register(lambda: None)
    assert registry.register(plain) == f"{HERE}:plain"


def test_registered_functions_resolve_whatever_allow_says() -> None:
    registry = Registry(allow=())
    name = registry.register(plain)
    assert registry.resolve(name) is plain


def test_names_outside_allow_are_refused_unless_marked_with_task() -> None:
    registry = Registry(allow=("someone_else",))
    assert registry.resolve(f"{HERE}:plain") is None
    assert registry.resolve(f"{HERE}:marked") is marked
    assert registry.resolve(f"{HERE}:marked_bare") is marked_bare
    allowed = Registry(allow=("tests",))
    assert allowed.resolve(f"{HERE}:plain") is plain
    # A prefix of a package name is not the package.
    assert Registry(allow=("test",)).resolve(f"{HERE}:plain") is None


def test_foreign_functions_reexported_by_an_allowed_module_are_refused() -> None:
    registry = Registry(allow=("tests", "os"))
    assert registry.resolve(f"{HERE}:rmtree") is None
    # os.system is a builtin, not a Python function: never resolved, even with "os" allowed.
    assert registry.resolve("os:system") is None


def test_names_whose_qualname_does_not_match_are_refused() -> None:
    registry = Registry(allow=("tests",))
    assert registry.resolve(f"{HERE}:alias") is None
    assert registry.resolve(f"{HERE}:Holder.fn") is None
    assert registry.resolve(f"{HERE}:Holder.static") is Holder.static
    assert registry.resolve(f"{HERE}:make_closure.<locals>.inner") is None
    assert registry.resolve(f"{HERE}:missing") is None
    assert registry.resolve(f"{HERE}.plain") is None  # no ':' at all


def test_resolve_never_imports_the_module_storage_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = "afterward_probe_never_imported"
    witness = tmp_path / "imported"
    (tmp_path / f"{module}.py").write_text(
        "from pathlib import Path\n"
        "from afterward import task\n"
        f"Path({str(witness)!r}).write_text('imported')\n"
        "@task\n"
        "def job() -> None:\n"
        "    pass\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    registry = Registry(allow=(module,))
    before = set(sys.modules)
    assert registry.resolve(f"{module}:job") is None
    assert set(sys.modules) == before
    assert not witness.exists()
    # Once the application itself imported the module, the same name resolves.
    monkeypatch.delitem(sys.modules, module, raising=False)
    imported = __import__(module)
    assert witness.exists()
    assert registry.resolve(f"{module}:job") is imported.job


def test_task_options_are_attached_and_checked() -> None:
    opts = options_of(marked)
    assert opts == TaskOptions(max_attempts=2, queue="mail")
    assert options_of(marked_bare) == TaskOptions()
    assert options_of(plain) is None
    policy = RetryPolicy(base_delay=3)
    assert options_of(task(retry=policy)(make_closure())) == TaskOptions(retry=policy)  # type: ignore[arg-type]
    for bad in ({"max_attempts": 0}, {"max_attempts": 1.5}):
        with pytest.raises(ConfigurationError, match="max_attempts"):
            task(**bad)
    for timeout in (0, -1, "5"):
        with pytest.raises(ConfigurationError, match="timeout"):
            task(timeout=timeout)  # type: ignore[arg-type]
