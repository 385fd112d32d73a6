"""Every ```python example in README.md and docs/*.md runs, as written, and its asserts hold."""

from __future__ import annotations

import re
import sys
import types
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
BLOCK = re.compile(r"^```python\n(.*?)^```", re.M | re.S)


def examples() -> list[tuple[str, str]]:
    found = []
    for doc in DOCS:
        for i, code in enumerate(BLOCK.findall(doc.read_text(encoding="utf-8"))):
            found.append((f"{doc.name}#{i + 1}", code))
    return found


def test_the_docs_have_examples() -> None:
    assert len(examples()) >= 3


@pytest.mark.parametrize(("name", "code"), examples(), ids=[n for n, _ in examples()])
def test_example_runs(
    name: str, code: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)  # examples write their SQLite files here
    module_name = "docs_example_" + re.sub(r"\W", "_", name)
    module = types.ModuleType(module_name)
    sys.modules[module_name] = module  # so example functions have an import path
    try:
        exec(compile(code, name, "exec"), module.__dict__)  # noqa: S102 - our own docs
    finally:
        del sys.modules[module_name]
