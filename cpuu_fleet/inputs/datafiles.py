"""Read the YAML and JSON files operators write, remembering line numbers for error messages.

The one YAML loader of cpuu-fleet (inventories, vars files, ``--extra-vars``, playbooks). Every
mapping comes back as a :class:`LineDict`, a plain ``dict`` that also knows the line of each key
(and every list as a :class:`LineList`, with the line of each item), so "``hosts`` must be a mapping" can point at ``inventories/example.yml:12`` instead of leaving
the operator to search. A syntax error names the file and the line.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import yaml

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs import vault
from cpuu_fleet.inputs.hostvars import Unsafe

DATA_SUFFIXES = (".yml", ".yaml", ".json")
MAX_YAML_NODES = 2_000_000
"""How many values a YAML document may hold once its aliases are expanded. An alias shares its
anchor's value, so a few hundred bytes of nested aliases ("billion laughs") stand for billions
of values, and everything that walks the data (templating, masking, listing) would never end.
Anchors and ``<<: *defaults`` merges in a real inventory stay far below this (40,000 hosts
each merging 40 defaults is about 1.7 million)."""


class LineDict(dict):
    """A dict from a data file, with the line of the mapping and of each of its keys."""

    line: int | None = None
    key_lines: dict[Any, int]

    def __init__(self, *args: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self.key_lines = {}

    def line_of(self, key: Any) -> int | None:
        return self.key_lines.get(key, self.line)


class LineList(list):
    """A list from a data file, with the line of the list and of each of its items."""

    line: int | None = None
    item_lines: list[int]

    def __init__(self, *args: Any):
        super().__init__(*args)
        self.item_lines = []


_MERGE_TAG = "tag:yaml.org,2002:merge"


class _Loader(yaml.SafeLoader):
    """SafeLoader that builds LineDicts and knows Ansible's ``!unsafe`` and ``!vault`` tags."""

    source = "<yaml>"
    """The file (or option) being read, named by inline vault values."""

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        """Note which keys were written in the mapping itself before ``<<: *anchor`` merges
        are put in (PyYAML flattens a merged mapping when it is merged, which may be before
        it is constructed)."""
        if not hasattr(node, "written_keys"):
            node.written_keys = {id(key) for key, _ in node.value if key.tag != _MERGE_TAG}
        super().flatten_mapping(node)


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    # A key written twice is an error, but a written key may override one merged in with
    # ``<<: *anchor`` (flatten_mapping puts the merged pairs first, so the written one wins).
    loader.flatten_mapping(node)
    written = node.written_keys
    result = LineDict()
    written_keys: set[Any] = set()
    result.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        try:
            hash(key)
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping",
                node.start_mark,
                "found an unhashable key",
                key_node.start_mark,
            ) from None
        if id(key_node) in written:
            if key in written_keys:
                raise yaml.constructor.ConstructorError(
                    None,
                    None,
                    f"duplicate key {key!r} (first on line {result.key_lines[key]})",
                    key_node.start_mark,
                )
            written_keys.add(key)
        result[key] = loader.construct_object(value_node, deep=True)
        result.key_lines[key] = key_node.start_mark.line + 1
    return result


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    result = LineList(loader.construct_object(child, deep=True) for child in node.value)
    result.line = node.start_mark.line + 1
    result.item_lines = [child.start_mark.line + 1 for child in node.value]
    return result


def _construct_unsafe(loader: _Loader, node: yaml.Node) -> Unsafe:
    return Unsafe(loader.construct_scalar(node))  # type: ignore[arg-type]


def _construct_vault(loader: _Loader, node: yaml.Node) -> vault.VaultText:
    """An inline ``!vault |`` value stays encrypted until a host uses it (see :mod:`.vault`)."""
    text = loader.construct_scalar(node)  # type: ignore[arg-type]
    if not isinstance(text, str) or not vault.is_vault_text(text):
        raise yaml.constructor.ConstructorError(
            None, None, "a !vault value must hold an ansible-vault text", node.start_mark
        )
    return vault.VaultText(text, f"{loader.source}:{node.start_mark.line + 1}")


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)
_Loader.add_constructor("!unsafe", _construct_unsafe)
_Loader.add_constructor("!vault", _construct_vault)


def parse_yaml(text: str, source: str | Path) -> Any:
    """Parse YAML text; a syntax error becomes an InputError naming ``source:line``.

    A whole file encrypted with ansible-vault is decrypted in memory first (:mod:`.vault`)."""
    if vault.is_vault_text(text):
        text = vault.decrypt(text, str(source))
    loader = _Loader(text)  # a SafeLoader subclass
    loader.source = str(source)
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        refuse_alias_bombs(node, source)
        return loader.construct_document(node)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "invalid YAML"
        line = mark.line + 1 if mark is not None else None
        if exc.context and exc.problem and exc.context not in problem:
            context = exc.context
            started = exc.context_mark.line + 1 if exc.context_mark is not None else None
            if started is not None and started != line:
                context = f"{context} that starts at line {started}"
            problem = f"{problem} ({context})"
        raise InputError(f"YAML syntax error: {problem}", where=source, line=line) from None
    except yaml.YAMLError as exc:
        raise InputError(f"YAML error: {exc}", where=source) from None
    except RecursionError:  # PyYAML composes and constructs recursively
        raise InputError("YAML nested too deeply", where=source) from None
    finally:
        loader.dispose()


def refuse_alias_bombs(node: yaml.Node, source: str | Path) -> None:
    """One InputError naming the file when a composed document's aliases expand past
    :data:`MAX_YAML_NODES` (every YAML loader of the project calls this before constructing)."""
    if _expanded_size(node) > MAX_YAML_NODES:
        raise InputError(
            f"YAML aliases expand to more than {MAX_YAML_NODES:,} values or refer to themselves "
            "(an alias bomb?); "
            "write the values out, or share them through group vars",
            where=source,
        )


def _expanded_size(root: yaml.Node) -> int:
    """How many nodes the document holds with every alias expanded, in time proportional to its
    distinct nodes (a shared node is sized once). An alias inside its own anchor expands without
    end: it counts as over any limit."""
    over = MAX_YAML_NODES + 1
    sizes: dict[int, int] = {id(root): _SIZING}
    # Depth first with an explicit stack (a deeply nested document must not hit the recursion
    # limit); each frame resumes its children where it left off.
    children = _children(root)
    stack = [(root, children, iter(children))]
    while stack:
        node, children, todo = stack[-1]
        for child in todo:
            size = sizes.get(id(child))
            if size == _SIZING:
                return over  # the child is its own ancestor: an alias inside its anchor
            if size is None:
                grandchildren = _children(child)
                if grandchildren:
                    sizes[id(child)] = _SIZING
                    stack.append((child, grandchildren, iter(grandchildren)))
                    break
                sizes[id(child)] = 1
        else:
            stack.pop()
            sizes[id(node)] = min(over, 1 + sum(sizes[id(child)] for child in children))
    return sizes[id(root)]


_SIZING = -1
"""The size of a node whose children are still being sized."""


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def _json_hook(pairs: list[tuple[str, Any]], source: str) -> Any:
    # ``ansible-inventory --list`` writes an inline vault value as {"__ansible_vault": "..."}.
    if len(pairs) == 1 and pairs[0][0] == "__ansible_vault" and isinstance(pairs[0][1], str):
        return vault.VaultText(pairs[0][1], source)
    return LineDict(pairs)


def parse_json(text: str, source: str | Path) -> Any:
    """Parse JSON text (mappings as LineDicts); a syntax error names ``source:line``."""
    if vault.is_vault_text(text):
        text = vault.decrypt(text, str(source))
    try:
        return json.loads(text, object_pairs_hook=lambda pairs: _json_hook(pairs, str(source)))
    except json.JSONDecodeError as exc:
        raise InputError(f"JSON syntax error: {exc.msg}", where=source, line=exc.lineno) from None
    except RecursionError:
        raise InputError("JSON nested too deeply", where=source) from None


def load_data_file(path: Path) -> Any:
    """Load one YAML or JSON file (by suffix; anything else is read as YAML, a superset of JSON)."""
    text = read_text_file(path)
    if path.suffix.lower() == ".json":
        return parse_json(text, path)
    return parse_yaml(text, path)


def read_text_file(path: Path) -> str:
    """A data file's text: UTF-8 (a BOM allowed), never binary; errors name the file."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise InputError(f"cannot read file ({exc.strerror})", where=path) from None
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise InputError("not a UTF-8 text file", where=path, line=line) from None
    if "\x00" in text:
        raise InputError("not a text file (binary content)", where=path)
    return text
