"""The JSON of ``ansible-inventory --list`` and of dynamic inventory scripts, as an inventory.

CMDB, Active Directory and MECM exports are usually written in this shape, Ansible's documented
dynamic inventory format::

    {"_meta": {"hostvars": {"pc-01": {"ansible_host": "10.0.0.1"}}},
     "all": {"children": ["ungrouped", "wave1"]},
     "wave1": {"hosts": ["pc-01"], "vars": {"site": "Lyon"}, "children": []},
     "legacy": ["pc-02", "pc-03"]}

A group is a mapping of ``hosts`` (a list), ``children`` (a list) and ``vars``, or a plain list of
hosts (the older script form). :func:`from_inventory_list` turns it into the mapping a YAML
inventory gives, so one code path checks names and applies precedence. ``_meta.hostvars`` become
each host's own variables: ``ansible-inventory --list`` writes there the variables it already
merged from the groups, so they are the host's effective values, as in Ansible.
``{"__ansible_vault": "..."}`` values stay encrypted (:class:`~cpuu_fleet.inputs.vault.VaultText`).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs import vault
from cpuu_fleet.inputs.datafiles import LineDict

_GROUP_LISTS = ("hosts", "children")


def is_inventory_list(data: Any, *, json: bool) -> bool:
    """True for the ``--list`` shape: a ``_meta`` key; in JSON also a group that is a list of
    hosts, or a group whose ``hosts`` or ``children`` is a list. (In a YAML inventory a hosts
    list is the usual slip for a mapping, and stays an error saying so.)"""
    if not isinstance(data, Mapping):
        return False
    if "_meta" in data:
        return True
    if not json:
        return False
    for body in data.values():
        if isinstance(body, list):
            return True
        if isinstance(body, Mapping) and any(isinstance(body.get(k), list) for k in _GROUP_LISTS):
            return True
    return False


def from_inventory_list(data: Mapping[str, Any], file: Path) -> LineDict:
    """The groups of an ``ansible-inventory --list`` document, in the YAML inventory's shape."""
    hostvars = _hostvars(data.get("_meta"), file)
    top = LineDict()
    placed: set[str] = set()
    for name, body in data.items():
        if name == "_meta":
            continue
        if isinstance(body, list):
            body = {"hosts": body}
        if body is None:
            body = {}
        if not isinstance(body, Mapping):
            raise InputError(
                f"group {name!r} must be a list of hosts or a mapping of hosts, children and "
                f"vars, not {type(body).__name__}",
                where=file,
            )
        group = LineDict()
        for key, value in body.items():
            if key in _GROUP_LISTS:
                group[key] = _names(value, f"{key} of group {name!r}", file)
            elif key == "vars" and isinstance(value, Mapping):
                group[key] = _vault_values(value, f"{file}: group {name}")
            else:
                group[key] = value  # an unknown key, which the inventory reports
        if "hosts" in group:
            for host in group["hosts"]:
                if host not in placed and host in hostvars:
                    group["hosts"][host] = hostvars[host]
                    placed.add(host)
        top[str(name)] = group
    loose = [host for host in hostvars if host not in placed]
    if loose:  # in _meta only: Ansible makes them ungrouped hosts
        group = top.setdefault("all", LineDict())
        group.setdefault("hosts", LineDict()).update({host: hostvars[host] for host in loose})
    return top


def _names(value: Any, what: str, file: Path) -> LineDict:
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise InputError(f"{what} must be a list of names", where=file)
    return LineDict(dict.fromkeys(value))


def _hostvars(meta: Any, file: Path) -> dict[str, Any]:
    if meta is None:
        return {}
    if not isinstance(meta, Mapping) or not isinstance(meta.get("hostvars", {}), Mapping):
        raise InputError("_meta must hold a mapping 'hostvars' of host -> variables", where=file)
    found: dict[str, Any] = {}
    for host, variables in meta.get("hostvars", {}).items():
        if variables is not None and not isinstance(variables, Mapping):
            raise InputError(f"_meta.hostvars of {host!r} must be a mapping", where=file)
        found[str(host)] = LineDict(_vault_values(variables or {}, f"{file}: host {host}"))
    return found


def _vault_values(value: Any, where: str) -> Any:
    """``{"__ansible_vault": TEXT}`` (read as YAML, or nested) -> an encrypted value."""
    if isinstance(value, vault.VAULT_VALUES):
        return value
    if isinstance(value, Mapping):
        if len(value) == 1 and isinstance(value.get("__ansible_vault"), str):
            return vault.VaultText(value["__ansible_vault"], where)
        return {key: _vault_values(item, where) for key, item in value.items()}
    if isinstance(value, list):
        return [_vault_values(item, where) for item in value]
    return value
