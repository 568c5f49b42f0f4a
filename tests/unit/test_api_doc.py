"""docs/api.md against the method table and the error classes: one cannot drift alone."""

from __future__ import annotations

import inspect
import re
from pathlib import Path

import pytest

from gossipchat.daemon import errors
from gossipchat.rpc.table import METHODS

DOC = Path(__file__).resolve().parents[2] / "docs" / "api.md"
_HEADING = re.compile(r"^### `([^`]+)`\s*$", re.MULTILINE)
_PARAM_ROW = re.compile(r"^\| `([^`]+)` \| (\w+) \| (yes|no) \|", re.MULTILINE)
_ERROR_ROW = re.compile(r"^\| (-\d+) \| (\w[\w ]*?) \|", re.MULTILINE)


def method_sections() -> dict[str, str]:
    """Each `### \\`name\\`` section of the Methods chapter, by name."""
    text = DOC.read_text()
    chapter = text.split("\n## Methods\n", 1)[1]
    chapter = re.split(r"^## ", chapter, maxsplit=1, flags=re.MULTILINE)[0]
    headings = list(_HEADING.finditer(chapter))
    out: dict[str, str] = {}
    for here, after in zip(headings, [*headings[1:], None], strict=True):
        name = here.group(1)
        assert name not in out, f"two sections for {name}"
        out[name] = chapter[here.end(): after.start() if after else len(chapter)]
    return out


def test_every_method_has_a_section_and_no_section_is_extra() -> None:
    documented = set(method_sections())
    assert set(METHODS) - documented == set(), "methods without a section in docs/api.md"
    assert documented - set(METHODS) == set(), "sections for methods that do not exist"


@pytest.mark.parametrize("name", list(METHODS))
def test_a_section_names_exactly_its_params_with_type_and_requiredness(name: str) -> None:
    section = method_sections()[name]
    rows = {m.group(1): (m.group(2), m.group(3) == "yes")
            for m in _PARAM_ROW.finditer(section)}
    expected = {p.name: (p.type, p.required) for p in METHODS[name].params}
    assert rows == expected
    if not expected:
        assert "Params: none." in section
    assert "Result:" in section
    assert "Errors:" in section


def test_every_error_class_is_in_the_error_table() -> None:
    table = {int(code): name for code, name in _ERROR_ROW.findall(DOC.read_text())}
    classes = [cls for _, cls in inspect.getmembers(errors, inspect.isclass)
               if issubclass(cls, errors.GossipchatError)]
    assert len(classes) > 10
    for cls in classes:
        assert table.get(cls.code) == cls.__name__, f"{cls.__name__} ({cls.code})"
    for code in (-32700, -32600, -32601, -32602, -32603):
        assert code in table
