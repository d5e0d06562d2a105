"""YAML with line/column marks: load round-trip trees, turn them into plain data, locate a path.

Rule files and rule-test files are read with ruamel.yaml's round-trip loader so that every
error can name the file, line and column of the value (or key) it is about.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.constructor import RoundTripConstructor
from ruamel.yaml.error import MarkedYAMLError

from atmguard.core.errors import RuleError

Loc = tuple[str | int, ...]


class _Constructor(RoundTripConstructor):
    """Round-trip constructor that keeps timestamps as the text written (with their zone)."""


_Constructor.add_constructor("tag:yaml.org,2002:timestamp", RoundTripConstructor.construct_yaml_str)


def _yaml() -> YAML:
    yaml = YAML(typ="rt")
    yaml.Constructor = _Constructor
    yaml.allow_duplicate_keys = False
    return yaml


def load_yaml(text: str, path: str) -> Any:
    """Parse YAML text into a round-trip tree; a syntax error becomes a RuleError at its mark."""
    try:
        return _yaml().load(text)
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "not valid YAML"
        if "found duplicate key" in str(exc):
            problem = "this key appears twice in the same mapping"
        line, col = (mark.line + 1, mark.column + 1) if mark is not None else (1, 1)
        raise RuleError(f"not valid YAML: {problem}", path, line, col) from None
    except Exception as exc:  # ruamel raises a few unmarked errors (e.g. bad characters)
        raise RuleError(f"not valid YAML: {exc}", path, 1, 1) from None


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


def position(root: Any, loc: Sequence[str | int], *, at_key: bool = False) -> tuple[int, int]:
    """1-based (line, column) of the value at `loc` (or of its key with `at_key`).

    A path that leaves the tree (a missing key) stops at the deepest node that exists,
    which is where the analyst has to add something.
    """
    node = root
    line, col = _start(root)
    for i, part in enumerate(loc):
        last = i == len(loc) - 1
        if isinstance(node, dict) and part in node:
            lc = getattr(node, "lc", None)
            if lc is not None:
                try:
                    pos = lc.key(part) if (last and at_key) else lc.value(part)
                except (KeyError, TypeError, AttributeError):
                    pos = None
                if pos is not None:
                    line, col = pos[0] + 1, pos[1] + 1
            node = node[part]
        elif isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
            lc = getattr(node, "lc", None)
            if lc is not None:
                try:
                    pos = lc.item(part)
                except (KeyError, TypeError, AttributeError):
                    pos = None
                if pos is not None:
                    line, col = pos[0] + 1, pos[1] + 1
            node = node[part]
        else:
            break
    return line, col


def _start(node: Any) -> tuple[int, int]:
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
