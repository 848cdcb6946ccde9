"""The YAML loader of spec and space files: ``yaml.SafeLoader`` plus three refusals.

- **Duplicate keys**: ``safe_load`` keeps the last of two equal keys silently; here the
  second one is an error naming the key and both lines (:class:`DuplicateKey`).
- **Alias bombs**: a YAML alias (``*name``) repeats a node without copying it, so a
  1 KB file can stand for a billion values ("billion laughs") that explode when printed
  or walked. The composed document is measured before any value is built: aliases may
  add at most :data:`MAX_ALIAS_NODES` nodes, and an alias may not contain itself
  (:class:`AliasBomb`).
- **Nesting deeper than Python's recursion limit** (:class:`TooDeep`), instead of a
  ``RecursionError`` traceback.

Each refusal is a ``yaml.MarkedYAMLError`` with ``problem``, ``problem_mark`` and a
``fix``, so callers print it like any other YAML error. Nothing here prints a value.
This module is the bottom layer's: it imports only PyYAML.
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = [
    "MAX_ALIAS_NODES",
    "AliasBomb",
    "DuplicateKey",
    "SafeLoader",
    "TooDeep",
    "YamlRefused",
    "load",
]

MAX_ALIAS_NODES = 10_000  # nodes that aliases may add to a document, all aliases together


class YamlRefused(yaml.MarkedYAMLError):
    """A document refused for safety, not for its syntax; ``fix`` says what to write."""

    def __init__(self, problem: str, mark: Any, fix: str) -> None:
        super().__init__(problem=problem, problem_mark=mark)
        self.fix = fix


class DuplicateKey(YamlRefused):
    """A mapping holds the same key twice (``first_mark``: where it appeared first)."""

    def __init__(self, key: Any, mark: Any, first_mark: Any) -> None:
        shown = repr(key) if len(repr(key)) <= 80 else repr(key)[:77] + "..."
        super().__init__(
            f"duplicate key {shown}",
            mark,
            f"keep one {shown} key in this mapping and delete the other",
        )
        self.key = key
        self.first_mark = first_mark


class AliasBomb(YamlRefused):
    """Aliases that expand the document beyond :data:`MAX_ALIAS_NODES`, or into itself."""


class TooDeep(YamlRefused):
    """Nesting deeper than the parser can follow."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    return []


def _distinct(root: yaml.Node) -> int:
    seen: set[int] = set()
    stack = [root]
    while stack:
        node = stack.pop()
        if id(node) not in seen:
            seen.add(id(node))
            stack.extend(_children(node))
    return len(seen)


def check_aliases(root: yaml.Node, max_added: int = MAX_ALIAS_NODES) -> None:
    """Refuse a composed document whose aliases add more than ``max_added`` nodes.

    Each node's expanded size (itself plus its children, aliases counted every time) is
    computed once, bottom-up and without recursion, so the check costs the size of the
    file, not of its expansion.
    """
    limit = _distinct(root) + max_added
    sizes: dict[int, int] = {}
    open_nodes: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, finished = stack.pop()
        key = id(node)
        if finished:
            open_nodes.discard(key)
            sizes[key] = 1 + sum(sizes[id(c)] for c in _children(node))
            if sizes[key] > limit:
                raise AliasBomb(
                    f"YAML aliases expand this value beyond {max_added} added values "
                    "(an alias bomb); it is refused unread",
                    node.start_mark,
                    "write the values out, or repeat an anchored value (*name) a few times "
                    "rather than nesting aliases of aliases",
                )
            continue
        if key in sizes:
            continue
        if key in open_nodes:
            raise AliasBomb(
                "a YAML alias refers to the value that contains it (a recursive alias)",
                node.start_mark,
                "replace the alias (*name) inside its own anchored value by a plain value",
            )
        open_nodes.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in sizes)


class SafeLoader(yaml.SafeLoader):
    """``yaml.SafeLoader`` that refuses duplicate keys and alias bombs."""

    def construct_document(self, node: yaml.Node) -> Any:
        check_aliases(node)
        return super().construct_document(node)

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        if isinstance(node, yaml.MappingNode):
            first: dict[Any, Any] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=deep)
                try:
                    if key in first:
                        raise DuplicateKey(key, key_node.start_mark, first[key])
                    first[key] = key_node.start_mark
                except TypeError:  # an unhashable key: construct_mapping refuses it below
                    pass
        return super().construct_mapping(node, deep=deep)


def load(text: str) -> Any:
    """``yaml.safe_load`` with the refusals above (a single document)."""
    try:
        return yaml.load(text, Loader=SafeLoader)  # noqa: S506 (a SafeLoader subclass)
    except RecursionError:
        raise TooDeep(
            "the YAML nests lists or mappings deeper than can be read",
            None,
            "flatten the structure; spec and space files need only a few levels",
        ) from None
