"""Tables that forget their oldest entry are OrderedDicts, never plain dicts.

CPython's dict keeps deleted entries as dummies in its entry array until the next
resize, and iteration starts at index 0: ``next(iter(d))`` after deleting from the
front walks every dummy. A table used as a FIFO or LRU (insert at the back, take the
front) then costs O(size) per eviction instead of O(1): on this machine 7.5 µs per
eviction at 6,000 entries and 35 µs at 50,000, against 0.2-0.3 µs for an OrderedDict,
whose iteration follows its linked list. Under a flood every new flow, dialog or
stream evicts one, so this is the per-packet cost issue 12 bounds.

The check reads the source: an attribute created as a plain dict (``{}``, ``dict()``,
``field(default_factory=dict)``) must not be read from its front (``next(iter(...))``,
``itertools.islice(...)``, also over ``.values()``/``.items()``)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

AGENT = Path(__file__).resolve().parent.parent / "agent"
FRONT_READERS = {"iter", "islice"}


def _is_plain_dict(value: ast.expr | None) -> bool:
    if isinstance(value, ast.Dict) and not value.keys:
        return True
    if isinstance(value, ast.Call):
        name = value.func.id if isinstance(value.func, ast.Name) else None
        if name == "dict" and not value.args:
            return True
        if name == "field":
            return any(k.arg == "default_factory" and isinstance(k.value, ast.Name)
                       and k.value.id == "dict" for k in value.keywords)
    return False


def _attr_name(node: ast.expr) -> str | None:
    """``self.X``, ``self.X.values()``/``.items()``/``.keys()`` -> X."""
    if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("values", "items", "keys")):
        node = node.func.value
    if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name):
        return node.attr if node.value.id == "self" else None
    return None


def _plain_dicts(tree: ast.AST) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.AnnAssign) and _is_plain_dict(node.value):
            target = node.target
            if isinstance(target, ast.Attribute):
                out.add(target.attr)
            elif isinstance(target, ast.Name):  # a dataclass field
                out.add(target.id)
        elif isinstance(node, ast.Assign) and _is_plain_dict(node.value):
            out.update(t.attr for t in node.targets if isinstance(t, ast.Attribute))
    return out


def _front_reads(tree: ast.AST) -> list[tuple[str, int]]:
    out = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not node.args:
            continue
        func = node.func
        name = func.id if isinstance(func, ast.Name) else (
            func.attr if isinstance(func, ast.Attribute) else None)
        if name in FRONT_READERS and (attr := _attr_name(node.args[0])) is not None:
            out.append((attr, node.lineno))
    return out


def violations(source: str) -> list[str]:
    tree = ast.parse(source)
    plain = _plain_dicts(tree)
    reads = sorted(_front_reads(tree), key=lambda r: r[1])
    return [f"self.{attr} (line {line})" for attr, line in reads if attr in plain]


@pytest.mark.parametrize("path", sorted(AGENT.rglob("*.py")),
                         ids=lambda p: str(p.relative_to(AGENT)))
def test_no_plain_dict_is_read_from_its_front(path: Path) -> None:
    assert violations(path.read_text()) == [], (
        f"{path}: a plain dict used as a FIFO/LRU costs O(size) per eviction; "
        "make it a collections.OrderedDict")


def test_the_check_sees_the_pattern() -> None:
    bad = ("class T:\n    def __init__(self):\n        self._t: dict[int, int] = {}\n"
           "    def evict(self):\n        del self._t[next(iter(self._t))]\n"
           "        return next(iter(self._t.values()))\n")
    assert violations(bad) == ["self._t (line 5)", "self._t (line 6)"]
    good = bad.replace("= {}", "= OrderedDict()")
    assert violations(good) == []
    field_bad = ("@dataclass\nclass C:\n    seen: dict[int, None] = field(default_factory=dict)\n"
                 "    def f(self):\n        return list(itertools.islice(self.seen, 2))\n")
    assert violations(field_bad) == ["self.seen (line 5)"]
