"""YAML with line/column marks: load round-trip trees, turn them into plain data, locate a path.

Every hand-edited YAML file (rules, rule tests, labels, the deployment config, cameras) is
read here with ruamel.yaml's round-trip loader, and every error about it is placed by
`locate`, so a syntax error and a bad value in any of them point at the file the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError

from atmguard.core.errors import Position, PositionedError, RuleError, key_path

Loc = tuple[str | int, ...]
Mark = tuple[int, int]
"""A 1-based (line, column)."""


class _Constructor(RoundTripConstructor):
    """Round-trip constructor that keeps timestamps as the text written (with their zone)."""


_Constructor.add_constructor("tag:yaml.org,2002:timestamp", RoundTripConstructor.construct_yaml_str)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    yaml.allow_duplicate_keys = False
    return yaml


def load_yaml(text: str, path: str, *, error: type[PositionedError] = RuleError, column: bool = True) -> Any:
    """Parse YAML text into a round-trip tree; a syntax error raises `error` at its mark.

    `column=False` leaves the column out, for files whose messages name the line only.
    """
    try:
        return _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        if "found duplicate key" in str(exc):
            problem = "this key appears twice in the same mapping"
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (None, None)
        where = Position(path, line, col if column else None)
        raise error(f"not valid YAML: {problem}", position=where) from None
    except Exception as exc:  # noqa: BLE001 - ruamel raises a few unmarked errors (e.g. bad characters)
        raise error(f"not valid YAML: {exc}", position=Position(path)) from None


def read_yaml(path: Path) -> Any:
    """Read and parse a YAML file (UTF-8)."""
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise RuleError("the file is not UTF-8 text", str(path), 1, 1) from None
    return load_yaml(text, str(path))


def plain(node: Any) -> Any:
    """A round-trip tree as plain dicts, lists, str, int, float, bool, None (what pydantic validates)."""
    if isinstance(node, dict):
        return {(str(k) if isinstance(k, str) else k): plain(v) for k, v in node.items()}
    if isinstance(node, list):
        return [plain(v) for v in node]
    if isinstance(node, bool) or node is None:
        return node
    if isinstance(node, int):
        return int(node)
    if isinstance(node, float):
        return float(node)
    if isinstance(node, str):
        return str(node)
    return node


def locate(root: Any, loc: Sequence[str | int], *, path: str | None = None, at_key: bool = False,
           column: bool = True) -> Position:
    """Where `loc` (a pydantic `loc`, or any path of keys and indices) is in a round-trip tree.

    A path that leaves the tree (a missing key) stops at the deepest entry that exists,
    which is where the author has to add something. At the value (the default) that is the
    value written there, the document itself at worst. With `at_key`, it is the key (or the
    list item) of that entry; the document has no key, so a path that reaches no key has no
    line. `column=False` leaves the column out, for files whose messages name the
    line only. The key path is always that of the whole `loc`.
    """
    mark = _mark(root, loc, at_key=at_key)
    line, col = mark if mark is not None else (None, None)
    return Position(path, line, col if column else None, key_path(loc) or None)


def position(root: Any, loc: Sequence[str | int], *, at_key: bool = False) -> Mark:
    """1-based (line, column) of `loc` as `locate` finds it, the document's start when it has none."""
    return _mark(root, loc, at_key=at_key) or _start(root)


def _mark(root: Any, loc: Sequence[str | int], *, at_key: bool) -> Mark | None:
    """(line, column) of the key or of the value of the deepest entry of `loc` that exists."""
    node = root
    key: Mark | None = None  # the document itself has no key
    value: Mark = _start(root)
    for part in loc:
        if isinstance(node, dict) and part in node:
            key_mark, value_mark = _lc(node, "key", part), _lc(node, "value", part)
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            key_mark = value_mark = _lc(node, "item", part)
        else:
            break
        # an entry ruamel did not mark keeps the place of the one above it
        key, value = key_mark or key, value_mark or value
        node = node[part]
    return key if at_key else value


def _lc(node: Any, which: str, part: str | int) -> Mark | None:
    lc = getattr(node, "lc", None)
    if lc is None:
        return None
    try:
        line, col = getattr(lc, which)(part)
    except (KeyError, TypeError, AttributeError):
        return None
    return int(line) + 1, int(col) + 1


def _start(node: Any) -> Mark:
    lc = getattr(node, "lc", None)
    if lc is not None and lc.line is not None:
        return lc.line + 1, (lc.col or 0) + 1
    return 1, 1


def get(root: Any, loc: Sequence[str | int]) -> Any:
    """The node at `loc`, or None when the path leaves the tree."""
    node: Any = root
    for part in loc:
        in_map = isinstance(node, dict) and part in node
        in_seq = isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node)
        if not (in_map or in_seq):
            return None
        node = node[part]
    return node
