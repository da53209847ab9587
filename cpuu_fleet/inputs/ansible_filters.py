"""The Jinja filters and tests Ansible inventories commonly use, so their values template here too.

Inventories written for Ansible shape names and paths with Ansible's own filters
(``{{ inventory_hostname | regex_replace('\\.corp$', '') }}``, ``{{ x | ternary('a', 'b') }}``,
``{{ site is match('lyo') }}``). Jinja has none of them; without them such an inventory fails
before any host is touched. These are written from Ansible's documented behaviour (the project
is MIT and carries no ansible-core code). Where this set stays smaller than Ansible's, an
unknown filter fails with Jinja's own "No filter named ..." naming the variable, and
``docs/inventory-and-templates.md`` lists what is here.
"""

from __future__ import annotations

import base64
import json
import ntpath
import posixpath
import re
import shlex
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import jinja2
import yaml

from cpuu_fleet.errors import InputError


def _flags(ignorecase: bool, multiline: bool) -> int:
    return (re.IGNORECASE if ignorecase else 0) | (re.MULTILINE if multiline else 0)


def regex_replace(
    value: Any = "",
    pattern: str = "",
    replacement: str = "",
    ignorecase: bool = False,
    multiline: bool = False,
    count: int = 0,
) -> str:
    """Every match of ``pattern`` replaced (at most ``count`` when it is above 0); the
    replacement uses Python's ``\\1`` and ``\\g<name>`` back-references, as in Ansible."""
    return re.sub(
        pattern, replacement, str(value), count=count, flags=_flags(ignorecase, multiline)
    )


def regex_search(value: Any, pattern: str, *groups: str, **options: bool) -> Any:
    """The first match, or None. With ``'\\1'`` or ``'\\g<name>'`` arguments, the list of those
    groups of the first match (Ansible's form for picking parts out)."""
    flags = _flags(bool(options.get("ignorecase")), bool(options.get("multiline")))
    match = re.search(pattern, str(value), flags)
    if match is None:
        return None
    if not groups:
        return match.group()
    picked = []
    for group in groups:
        number = re.fullmatch(r"\\(\d+)", group)
        named = re.fullmatch(r"\\g<(\w+)>", group)
        if number:
            picked.append(match.group(int(number.group(1))))
        elif named:
            picked.append(match.group(named.group(1)))
        else:
            raise InputError(f"regex_search: {group!r} is not a group reference (\\1 or \\g<name>)")
    return picked


def regex_findall(
    value: Any, pattern: str, multiline: bool = False, ignorecase: bool = False
) -> list[Any]:
    """Every non-overlapping match, as :func:`re.findall` gives them."""
    return re.findall(pattern, str(value), _flags(ignorecase, multiline))


def regex_escape(value: Any, re_type: str = "python") -> str:
    """Text made literal inside a regular expression (Python's syntax only)."""
    if re_type != "python":
        raise InputError(f"regex_escape: only re_type='python' is supported, not {re_type!r}")
    return re.escape(str(value))


def ternary(value: Any, true_value: Any, false_value: Any, none_value: Any = None) -> Any:
    """``true_value`` if the value is true, ``false_value`` if not; ``none_value`` for None
    when one is given."""
    if value is None and none_value is not None:
        return none_value
    return true_value if value else false_value


def mandatory(value: Any, msg: str | None = None) -> Any:
    """The value, or an error (``msg`` when given) where it is undefined."""
    if isinstance(value, jinja2.Undefined):
        raise InputError(msg or "a mandatory variable is not defined")
    return value


def combine(*dicts: Any, recursive: bool = False, list_merge: str = "replace") -> dict:
    """Mappings merged left to right, later keys winning; ``recursive`` merges nested mappings.
    Lists are replaced (``list_merge='replace'``) or appended (``'append'``)."""
    if list_merge not in ("replace", "append"):
        raise InputError(f"combine: list_merge={list_merge!r} is not supported (replace, append)")
    merged: dict = {}
    for item in _dict_arguments(dicts):
        merged = _merge(merged, item, recursive=recursive, append=list_merge == "append")
    return merged


def _dict_arguments(values: Iterable[Any]) -> Iterable[Mapping]:
    for value in values:
        items = value if isinstance(value, (list, tuple)) else [value]
        for item in items:
            if not isinstance(item, Mapping):
                raise InputError(f"combine: expects mappings, got {type(item).__name__}")
            yield item


def _merge(base: dict, extra: Mapping, *, recursive: bool, append: bool) -> dict:
    result = dict(base)
    for key, value in extra.items():
        old = result.get(key)
        if recursive and isinstance(old, Mapping) and isinstance(value, Mapping):
            result[key] = _merge(dict(old), value, recursive=True, append=append)
        elif append and isinstance(old, list) and isinstance(value, list):
            result[key] = old + value
        else:
            result[key] = value
    return result


def dict2items(value: Any, key_name: str = "key", value_name: str = "value") -> list[dict]:
    """A mapping as a list of ``{key: ..., value: ...}`` items."""
    if not isinstance(value, Mapping):
        raise InputError(f"dict2items: expects a mapping, got {type(value).__name__}")
    return [{key_name: key, value_name: item} for key, item in value.items()]


def items2dict(value: Any, key_name: str = "key", value_name: str = "value") -> dict:
    """A list of ``{key: ..., value: ...}`` items as a mapping."""
    try:
        return {item[key_name]: item[value_name] for item in value}
    except (KeyError, TypeError):
        raise InputError(
            f"items2dict: expects a list of mappings with {key_name!r} and {value_name!r}"
        ) from None


def flatten(value: Any, levels: int | None = None, skip_nulls: bool = True) -> list:
    """Nested lists made flat (``levels`` deep at most); None items dropped unless told not."""
    flat: list = []
    for item in value:
        if skip_nulls and item is None:
            continue
        if isinstance(item, (list, tuple)) and (levels is None or levels > 0):
            flat.extend(flatten(item, None if levels is None else levels - 1, skip_nulls))
        else:
            flat.append(item)
    return flat


def unique(value: Iterable[Any]) -> list:
    """The items in their first order, each once (for the set filters; templates use Jinja's
    own ``unique``)."""
    seen: list = []
    for item in value:
        if item not in seen:
            seen.append(item)
    return seen


def union(a: Iterable[Any], b: Iterable[Any]) -> list:
    return unique([*a, *b])


def intersect(a: Iterable[Any], b: Iterable[Any]) -> list:
    others = list(b)
    return unique(item for item in a if item in others)


def difference(a: Iterable[Any], b: Iterable[Any]) -> list:
    others = list(b)
    return unique(item for item in a if item not in others)


def symmetric_difference(a: Iterable[Any], b: Iterable[Any]) -> list:
    first, second = list(a), list(b)
    return unique([*difference(first, second), *difference(second, first)])


def split(value: Any, separator: str | None = None, maxsplit: int = -1) -> list[str]:
    """``str.split``, as Ansible's ``split`` filter."""
    return str(value).split(separator, maxsplit)


def b64encode(value: Any, encoding: str = "utf-8") -> str:
    return base64.b64encode(str(value).encode(encoding)).decode("ascii")


def b64decode(value: Any, encoding: str = "utf-8") -> str:
    try:
        return base64.b64decode(str(value), validate=True).decode(encoding)
    except (ValueError, UnicodeDecodeError):
        raise InputError(f"b64decode: not base64 text of {encoding}") from None


def to_json(value: Any, **options: Any) -> str:
    return json.dumps(value, **options)


def to_nice_json(value: Any, indent: int = 4, **options: Any) -> str:
    return json.dumps(value, indent=indent, sort_keys=True, **options)


def from_json(value: Any) -> Any:
    try:
        return json.loads(str(value))
    except ValueError as exc:
        raise InputError(f"from_json: not JSON ({exc.msg})") from None


def to_yaml(value: Any, **options: Any) -> str:
    return yaml.safe_dump(value, allow_unicode=True, default_flow_style=None, **options)


def to_nice_yaml(value: Any, indent: int = 4, **options: Any) -> str:
    return yaml.safe_dump(
        value, indent=indent, allow_unicode=True, default_flow_style=False, **options
    )


def from_yaml(value: Any) -> Any:
    try:
        return yaml.safe_load(str(value))
    except yaml.YAMLError:
        raise InputError("from_yaml: not YAML") from None


def type_debug(value: Any) -> str:
    return type(value).__name__


FILTERS: dict[str, Callable[..., Any]] = {
    "regex_replace": regex_replace,
    "regex_search": regex_search,
    "regex_findall": regex_findall,
    "regex_escape": regex_escape,
    "ternary": ternary,
    "mandatory": mandatory,
    "combine": combine,
    "dict2items": dict2items,
    "items2dict": items2dict,
    "flatten": flatten,
    "union": union,
    "intersect": intersect,
    "difference": difference,
    "symmetric_difference": symmetric_difference,
    "split": split,
    "quote": lambda value: shlex.quote(str(value)),
    "basename": lambda value: posixpath.basename(str(value)),
    "dirname": lambda value: posixpath.dirname(str(value)),
    "win_basename": lambda value: ntpath.basename(str(value)),
    "win_dirname": lambda value: ntpath.dirname(str(value)),
    "win_splitdrive": lambda value: list(ntpath.splitdrive(str(value))),
    "splitext": lambda value: list(posixpath.splitext(str(value))),
    "b64encode": b64encode,
    "b64decode": b64decode,
    "to_json": to_json,
    "to_nice_json": to_nice_json,
    "from_json": from_json,
    "to_yaml": to_yaml,
    "to_nice_yaml": to_nice_yaml,
    "from_yaml": from_yaml,
    "type_debug": type_debug,
}


def _regex_test(value: Any, pattern: str, ignorecase: bool, multiline: bool, how: str) -> bool:
    finder = re.match if how == "match" else re.search
    return finder(pattern, str(value), _flags(ignorecase, multiline)) is not None


def match(value: Any, pattern: str, ignorecase: bool = False, multiline: bool = False) -> bool:
    """True where the pattern matches at the start of the value (``re.match``)."""
    return _regex_test(value, pattern, ignorecase, multiline, "match")


def search(value: Any, pattern: str, ignorecase: bool = False, multiline: bool = False) -> bool:
    """True where the pattern matches anywhere in the value (``re.search``)."""
    return _regex_test(value, pattern, ignorecase, multiline, "search")


def regex(
    value: Any,
    pattern: str,
    ignorecase: bool = False,
    multiline: bool = False,
    match_type: str = "search",
) -> bool:
    if match_type not in ("search", "match"):
        raise InputError(f"regex: match_type={match_type!r} is not supported (search, match)")
    return _regex_test(value, pattern, ignorecase, multiline, match_type)


TESTS: dict[str, Callable[..., bool]] = {
    "match": match,
    "search": search,
    "regex": regex,
    "contains": lambda container, item: item in container,
    "subset": lambda a, b: set(a) <= set(b),
    "superset": lambda a, b: set(a) >= set(b),
    "truthy": lambda value: bool(value),
    "falsy": lambda value: not value,
}


def install(environment: jinja2.Environment) -> None:
    """Give an environment the filters and tests above (Jinja's own built-ins stay as they are)."""
    environment.filters.update(FILTERS)
    environment.tests.update(TESTS)
