"""The fleet, read from an Ansible inventory so ops teams can reuse the one they have.

Formats: YAML (or JSON) by suffix; Ansible's INI format for ``.ini`` files and for files without
a data suffix whose content is not YAML (:mod:`cpuu_fleet.inputs.ini_inventory`); files or
values encrypted with Ansible Vault (:mod:`cpuu_fleet.inputs.vault`).

Supported: ``all`` / ``children`` (to any depth) / ``hosts`` / ``vars``; other top-level groups
(children of ``all``); host ranges (``pc-[0001:0050].corp.example``); ``group_vars/`` and
``host_vars/`` beside the inventory, each entry a ``.yml``/``.yaml``/``.json`` file (or no
extension) or a folder of such files; an inventory *folder* holding several inventory files.

Variable precedence is Ansible's (lowest first): group vars written in the inventory file, groups
taken in Ansible's order (by depth, then ``ansible_group_priority``, then name, so ``all`` <
parent < child and siblings by name); then ``group_vars/all``; then ``group_vars/<group>`` in
the same order; then the host's vars in the inventory file; then ``host_vars/<host>``. Merging
replaces whole values (Ansible's default ``hash_behaviour``). As in Ansible, a
``group_vars/all.yml`` file therefore wins over a child group's ``vars:`` written inline in the
inventory file.

Where cpuu-fleet is stricter than Ansible, it is because a rollout must not guess: an unknown key
in a group (``host:`` for ``hosts:``), a duplicate key, or a host name that is not a safe file name
is an error naming the file and line, not a warning.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs import patterns, vault
from cpuu_fleet.inputs.connection import ConnectionSettings, settings_from_vars
from cpuu_fleet.inputs.credentials import (
    MASK,
    AskPassLike,
    Secret,
    as_ask_pass,
    is_secret_name,
    resolve,
)
from cpuu_fleet.inputs.datafiles import (
    DATA_SUFFIXES,
    LineDict,
    load_data_file,
    parse_yaml,
    read_text_file,
)
from cpuu_fleet.inputs.hostvars import HostScope, make_environment
from cpuu_fleet.inputs.ini_inventory import looks_like_ini, parse_ini
from cpuu_fleet.inputs.inventory_list import from_inventory_list, is_inventory_list
from cpuu_fleet.inputs.inventory_script import (
    is_inventory_script,
    run_ansible_inventory,
    run_inventory_script,
)
from cpuu_fleet.redact import REDACTOR, mask_url_passwords

__all__ = ["ConnectionSettings", "Group", "Host", "Inventory"]

# Host names become folder names (reports/<run>/hosts/<host>/) and appear in --limit patterns, so
# they are restricted to what DNS names and IPv4 addresses use.
_HOST_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,252}$")
_GROUP_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]{0,127}$")
_RANGE = re.compile(r"\[([0-9a-zA-Z]+):([0-9a-zA-Z]+)(?::(\d+))?\]")
_GROUP_KEYS = ("hosts", "vars", "children")


@dataclass(eq=False)
class Group:
    """A group of the inventory: its own vars, direct hosts and child groups, in file order."""

    name: str
    vars: dict[str, Any] = field(default_factory=dict)
    file_vars: dict[str, Any] = field(default_factory=dict)
    children: list[str] = field(default_factory=list)
    hosts: list[str] = field(default_factory=list)
    parents: list[str] = field(default_factory=list)
    depth: int = 0
    source: str | None = None
    _host_set: set[str] = field(default_factory=set, init=False, repr=False)
    """``hosts`` as a set: membership tests stay O(1) with tens of thousands of hosts in a group."""

    def add_host(self, name: str) -> None:
        """Add a direct host once, keeping file order."""
        if name not in self._host_set:
            self._host_set.add(name)
            self.hosts.append(name)

    @property
    def priority(self) -> int:
        """``ansible_group_priority`` (inline vars only, as in Ansible); breaks ties between siblings."""
        value = self.vars.get("ansible_group_priority", 1)
        try:
            return int(value)
        except (TypeError, ValueError):
            raise InputError(
                f"ansible_group_priority of group {self.name} must be a whole number, not {value!r}",
                where=self.source,
            ) from None

    def sort_key(self) -> tuple[int, int, str]:
        return (self.depth, self.priority, self.name)


class Host:
    """A workstation: its name, its groups (outermost first) and its effective variables."""

    def __init__(
        self,
        name: str,
        groups: list[str],
        variables: dict[str, Any],
        inventory: Inventory,
        source: str | None = None,
    ):
        self.name = name
        self.groups = groups
        self.vars = variables
        self.source = source
        self._inventory = inventory

    def __repr__(self) -> str:
        return f"Host({self.name!r}, groups={self.groups!r})"

    @property
    def inventory(self) -> Inventory:
        return self._inventory

    def describe(self) -> dict[str, Any]:
        """Name, groups, effective connection settings and variables, with every secret masked.

        A connection setting taken from a vault (``ansible_user: "{{ vault_user }}"``) is real in
        :attr:`connection` and masked here: the redactor knows every decrypted value."""
        connection = {
            key: REDACTOR.scrub(value) if isinstance(value, str) else value
            for key, value in self.connection.describe().items()
        }
        return {
            "name": self.name,
            "groups": list(self.groups),
            "connection": connection,
            "vars": mask_secrets(self.vars),
        }

    def magic_vars(self) -> dict[str, Any]:
        """The names Ansible sets for every host, available to templates and values."""
        inventory = self._inventory
        return {
            "inventory_hostname": self.name,
            "inventory_hostname_short": self.name.split(".", 1)[0],
            "group_names": list(self.groups),
            "groups": inventory.group_hosts(),
            "inventory_dir": str(inventory.directory),
            "inventory_file": str(inventory.path),
        }

    def scope(
        self,
        *,
        reveal: bool,
        extra: Mapping[str, Any] | None = None,
        magic: Mapping[str, Any] | None = None,
        reveal_vault: bool = False,
    ) -> HostScope:
        """A fresh, lazily templated view of this host's variables (see :mod:`cpuu_fleet.inputs.hostvars`)."""
        variables = {**self.vars, **(extra or {})}
        return HostScope(
            self.name,
            variables,
            environment=self._inventory.environment,
            reveal=reveal,
            ask_pass=self._inventory.ask_pass,
            magic={**self.magic_vars(), **(magic or {})},
            missing_note=self._inventory.locked_note(),
            reveal_vault=reveal_vault,
        )

    @cached_property
    def connection(self) -> ConnectionSettings:
        """WinRM settings from Ansible's variables; the password is a lazy :class:`Secret`.

        Secret-named variables stay masked here (the password is read apart), but vault values
        are decrypted: a vaulted ``ansible_user`` or ``ansible_host`` must be the real one."""
        scope = self.scope(reveal=False, reveal_vault=True)

        def password(variable: str | None) -> Secret | None:
            if variable is None:
                if self._inventory.ask_pass is None:
                    return None
                ask = self._inventory.ask_pass
                return Secret.lazy(
                    lambda: ask.ask(
                        "winrm-password",
                        "WinRM password: ",
                        host=self.name,
                        variable="ansible_password",
                    )
                )
            return Secret.lazy(lambda: self._reveal_secret(variable))

        return settings_from_vars(self.name, scope.__getitem__, self.vars.__contains__, password)

    def _reveal_secret(self, variable: str) -> str:
        raw = self.vars.get(variable)
        if isinstance(raw, str) and "lookup(" in raw and "}}" in raw and raw.count("{{") == 1:
            # A plain lookup: resolve it directly so the error names this host and variable.
            return resolve(
                raw, host=self.name, variable=variable, ask_pass=self._inventory.ask_pass
            ).reveal()
        value = self.scope(reveal=True)[variable]
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = str(value)  # an unquoted all-digit password reads as a YAML number
        if not isinstance(value, str):
            raise InputError(
                f"{variable} must be a string, not {type(value).__name__}",
                where=f"host {self.name}",
            )
        if not value:
            raise InputError(
                f"{variable} is empty (a blank secret is never used)", where=f"host {self.name}"
            )
        return value


READERS = ("cpuu-fleet", "ansible-inventory")
"""Who reads an inventory source: cpuu-fleet itself (the default), or an installed
``ansible-inventory`` for what cpuu-fleet does not read (inventory plugins, ``constructed``,
``keyed_groups``); ``group_vars``/``host_vars`` and vault files are cpuu-fleet's either way."""
_READER = [READERS[0]]


def use_reader(name: str) -> None:
    """Make ``name`` (one of :data:`READERS`) the process's inventory reader (the CLI does, from
    the ``inventory_reader`` setting)."""
    if name not in READERS:
        raise InputError(f"unknown inventory reader {name!r}; valid: {', '.join(READERS)}")
    _READER[0] = name


class Inventory:
    """All hosts and groups of one inventory file or folder, in inventory order."""

    def __init__(self, path: Path, *, ask_pass: AskPassLike = None):
        self.path = path
        self.directory = path if path.is_dir() else path.parent
        self.ask_pass = as_ask_pass(ask_pass)
        self.groups: dict[str, Group] = {}
        self.hosts: list[Host] = []
        self.warnings: list[str] = []
        self.locked_vault_files: list[Path] = []
        """Encrypted vars files left unread because no vault password was given at all."""
        self.environment = make_environment()
        self._host_inline: dict[str, dict[str, Any]] = {}
        self._host_file_vars: dict[str, dict[str, Any]] = {}
        self._host_source: dict[str, str] = {}
        self._by_name: dict[str, Host] = {}
        self._position: dict[str, int] = {}
        """Host name -> its index in inventory order."""
        self._group_hosts: dict[str, list[str]] | None = None
        self._sealed = False
        """The inventory file being read is vault-encrypted: its variables are all secrets."""

    # ------------------------------------------------------------------------------------------
    # Loading
    # ------------------------------------------------------------------------------------------
    @classmethod
    def load(cls, path: str | Path, *, ask_pass: AskPassLike = None) -> Inventory:
        """Read an inventory file (or folder of them) and its ``group_vars``/``host_vars``."""
        path = Path(path)
        if not path.exists():
            raise InputError("inventory not found", where=path)
        inventory = cls(path, ask_pass=ask_pass)
        inventory._add_group("all", source=None)
        if _READER[0] == "ansible-inventory":
            inventory._parse_top(from_inventory_list(run_ansible_inventory(path), path), path)
            inventory._finish()
            return inventory
        files = inventory._inventory_files(path)
        for file in files:
            data = _load_inventory_file(file)
            inventory._sealed = vault.is_vault_file(file)
            inventory._parse_top(data, file)
        inventory._finish()
        return inventory

    def _inventory_files(self, path: Path) -> list[Path]:
        if path.is_file():
            return [path]
        files = sorted(
            p
            for p in path.iterdir()
            if p.is_file()
            and (p.suffix.lower() in DATA_SUFFIXES or p.suffix == "" or is_inventory_script(p))
            and not p.name.startswith(".")
        )
        if not files:
            raise InputError(
                "no inventory files (.yml, .yaml, .json, or INI files without an extension) in "
                "this folder",
                where=path,
            )
        return files

    def _parse_top(self, data: Any, file: Path) -> None:
        if data is None:
            self.warnings.append(f"{file}: empty inventory file")
            return
        if not isinstance(data, dict):
            raise InputError(
                "an inventory must be a mapping of groups (usually starting with 'all:')",
                where=file,
                line=getattr(data, "line", 1),
            )
        if isinstance(data.get("plugin"), str):
            raise InputError(
                f"an inventory plugin's file ({data['plugin']}): cpuu-fleet does not run plugins"
                " itself; have an installed ansible-inventory read it (inventory_reader ="
                ' "ansible-inventory" in cpuu-fleet.toml, or CPUU_FLEET_INVENTORY_READER)',
                where=file,
                line=_line(data, "plugin"),
            )
        for name, body in data.items():
            self._parse_group(str(name), body, parent=None, file=file, line=_line(data, name))

    def _parse_group(
        self, name: str, body: Any, *, parent: str | None, file: Path, line: int | None
    ) -> None:
        where = f"{file}:{line}" if line else str(file)
        if not _GROUP_NAME.match(name):
            raise InputError(
                f"group name {name!r} is not valid (letters, digits, '_', '-', '.')",
                where=file,
                line=line,
            )
        if name == "ungrouped" and body:
            pass  # Ansible allows hosts under ungrouped explicitly.
        group = self._add_group(name, source=where)
        if parent is not None:
            if name == "all":
                raise InputError("'all' cannot be a child group", where=file, line=line)
            self._link(parent, name)
        if body is None:
            return
        if not isinstance(body, dict):
            raise InputError(
                f"group {name!r} must be a mapping with hosts, vars or children, "
                f"not {type(body).__name__}",
                where=file,
                line=line,
            )
        for key in body:
            if key not in _GROUP_KEYS:
                raise InputError(
                    f"unexpected key {key!r} in group {name!r} (expected hosts, vars, children)",
                    where=file,
                    line=_line(body, key),
                )
        # Ansible's order: vars, then children, then hosts (this order is the inventory order).
        variables = body.get("vars")
        if variables is not None:
            if not isinstance(variables, dict):
                raise InputError(
                    f"vars of group {name!r} must be a mapping",
                    where=file,
                    line=_line(body, "vars"),
                )
            group.vars.update(self._seal(_str_keys(variables, file)))
        children = body.get("children")
        if children is not None:
            if not isinstance(children, dict):
                raise InputError(
                    f"children of group {name!r} must be a mapping of groups",
                    where=file,
                    line=_line(body, "children"),
                )
            for child, child_body in children.items():
                self._parse_group(
                    str(child), child_body, parent=name, file=file, line=_line(children, child)
                )
        hosts = body.get("hosts")
        if isinstance(hosts, str):  # Ansible accepts "hosts: pc-0001" for a single host
            hosts = {hosts: None}
        if hosts is not None:
            if not isinstance(hosts, dict):
                raise InputError(
                    f"hosts of group {name!r} must be a mapping of host names (a list is not "
                    "accepted; write 'pc-0001:' one per line)",
                    where=file,
                    line=_line(body, "hosts"),
                )
            for host_key, host_vars in hosts.items():
                host_line = _line(hosts, host_key)
                if host_vars is not None and not isinstance(host_vars, dict):
                    raise InputError(
                        f"vars of host {host_key!r} must be a mapping, not {type(host_vars).__name__}",
                        where=file,
                        line=host_line,
                    )
                host_text, port = _split_port(str(host_key))
                variables = self._seal(_str_keys(host_vars or {}, file))
                if port is not None:
                    variables.setdefault("ansible_port", port)
                for host_name in _expand_range(host_text, file, host_line):
                    self._add_host(host_name, name, variables, file, host_line)

    def _seal(self, variables: dict[str, Any]) -> dict[str, Any]:
        return vault.seal(variables) if self._sealed else variables

    def _add_group(self, name: str, source: str | None) -> Group:
        group = self.groups.get(name)
        if group is None:
            group = Group(name, source=source)
            self.groups[name] = group
        elif group.source is None:
            group.source = source
        return group

    def _link(self, parent: str, child: str) -> None:
        if child not in self.groups[parent].children:
            self.groups[parent].children.append(child)
        if parent not in self.groups[child].parents:
            self.groups[child].parents.append(parent)

    def _add_host(
        self, name: str, group: str, variables: dict, file: Path, line: int | None
    ) -> None:
        if not _HOST_NAME.match(name) or ".." in name:
            raise InputError(
                f"host name {name!r} is not valid (letters, digits, '.', '-', '_'; it becomes a "
                "folder name in reports)",
                where=file,
                line=line,
            )
        if name not in self._host_inline:
            self._host_inline[name] = {}
            self._host_source[name] = f"{file}:{line}" if line else str(file)
        self._host_inline[name].update(_str_keys(variables, file))
        self.groups[group].add_host(name)

    def _finish(self) -> None:
        # Groups with no parent (written at the top level) are children of 'all', as in Ansible.
        for group in list(self.groups.values()):
            if group.name != "all" and not group.parents:
                self._link("all", group.name)
        self._compute_depths()
        self._load_group_vars()
        self._load_host_vars()
        all_group = self.groups["all"]
        member_of: dict[str, set[str]] = {name: set() for name in self._host_inline}
        for group in self.groups.values():
            for host in group.hosts:
                member_of[host].add(group.name)
        # Hosts only in 'all' are in 'ungrouped', as in Ansible.
        for host, direct in member_of.items():
            if direct <= {"all"}:
                ungrouped = self._add_group("ungrouped", source=None)
                if "ungrouped" not in all_group.children:
                    self._link("all", "ungrouped")
                    ungrouped.depth = 1
                ungrouped.add_host(host)
                direct.add("ungrouped")
        seen_lower: dict[str, str] = {}
        for name in self._host_inline:
            other = seen_lower.setdefault(name.lower(), name)
            if other != name:
                self.warnings.append(
                    f"hosts {other!r} and {name!r} differ only in case: Windows names are not "
                    "case-sensitive, so this may be one workstation listed twice"
                )
        for name in self._host_inline:
            groups = self._ancestors(member_of[name])
            ordered = sorted((self.groups[g] for g in groups), key=Group.sort_key)
            host = Host(
                name,
                [g.name for g in ordered if g.name != "all"],
                self._effective_vars(name, ordered),
                self,
                self._host_source.get(name),
            )
            self._position[name] = len(self.hosts)
            self.hosts.append(host)
            self._by_name[name] = host

    def _compute_depths(self) -> None:
        """Depth = longest path from ``all`` (Ansible's); a cycle in ``children`` is an error."""
        done: set[str] = set()

        def check(name: str, path: list[str]) -> None:
            if name in path:
                cycle = " -> ".join([*path[path.index(name) :], name])
                where = self.groups[name].source or self.path
                raise InputError(f"groups form a cycle: {cycle}", where=where)
            if name in done:
                return
            for child in self.groups[name].children:
                check(child, [*path, name])
            done.add(name)

        for name in list(self.groups):
            check(name, [])

        def visit(name: str, depth: int) -> None:
            group = self.groups[name]
            if depth < group.depth or (depth == group.depth and name in visited):
                return
            visited.add(name)
            group.depth = depth
            for child in group.children:
                visit(child, depth + 1)

        visited: set[str] = set()
        visit("all", 0)

    def _ancestors(self, groups: Iterable[str]) -> set[str]:
        found: set[str] = set()
        pending = list(groups)
        while pending:
            name = pending.pop()
            if name in found:
                continue
            found.add(name)
            pending.extend(self.groups[name].parents)
        found.add("all")
        return found

    def _effective_vars(self, host: str, ordered: list[Group]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for group in ordered:
            result.update(group.vars)
        for group in ordered:  # 'all' sorts first: group_vars/all, then the others
            result.update(group.file_vars)
        result.update(self._host_inline[host])
        result.update(self._host_file_vars.get(host, {}))
        return result

    def locked_note(self) -> str | None:
        """What to add to an "undefined variable" error while vault files are left unread."""
        if not self.locked_vault_files:
            return None
        names = ", ".join(str(p) for p in self.locked_vault_files[:3])
        more = (
            f" and {len(self.locked_vault_files) - 3} more"
            if len(self.locked_vault_files) > 3
            else ""
        )
        return (
            f"it may be in {names}{more}, encrypted with Ansible Vault and not read: give "
            "--vault-password-file, --vault-id or --ask-vault-pass"
        )

    def _note_locked(self, locked: list[Path]) -> None:
        for file in locked:
            self.locked_vault_files.append(file)
            self.warnings.append(
                f"{file}: encrypted with Ansible Vault and no vault password was given: its "
                "variables are left out (give --vault-password-file, --vault-id or "
                "--ask-vault-pass)"
            )

    def _load_group_vars(self) -> None:
        folder = self.directory / "group_vars"
        locked: list[Path] = []
        for name, variables in _vars_folder(folder, locked):
            group = self.groups.get(name)
            if group is None:
                self.warnings.append(f"{folder / name}: no group named {name!r} in the inventory")
                continue
            group.file_vars.update(variables)
        self._note_locked(locked)

    def _load_host_vars(self) -> None:
        folder = self.directory / "host_vars"
        locked: list[Path] = []
        for name, variables in _vars_folder(folder, locked):
            if name not in self._host_inline:
                self.warnings.append(f"{folder / name}: no host named {name!r} in the inventory")
                continue
            self._host_file_vars.setdefault(name, {}).update(variables)
        self._note_locked(locked)

    # ------------------------------------------------------------------------------------------
    # Queries
    # ------------------------------------------------------------------------------------------
    def host(self, name: str) -> Host:
        try:
            return self._by_name[name]
        except KeyError:
            raise InputError(f"no host named {name!r} in the inventory", where=self.path) from None

    def group_hosts(self) -> dict[str, list[str]]:
        """Group name -> its hosts and its descendants' hosts, in inventory order (Ansible's ``groups``).

        Worked out once: the inventory does not change after loading, and every rendering uses it.
        """
        if self._group_hosts is None:
            self._group_hosts = {name: self._members(name) for name in self.groups}
        return self._group_hosts

    def _members(self, group: str) -> list[str]:
        wanted: set[str] = set()
        pending, seen = [group], set()
        while pending:
            name = pending.pop()
            if name in seen:
                continue
            seen.add(name)
            wanted.update(self.groups[name].hosts)
            pending.extend(self.groups[name].children)
        if group == "all":
            return [h.name for h in self.hosts]
        # Sorting the members (not scanning every host for each group) keeps group_hosts()
        # proportional to the memberships, with hundreds of groups over tens of thousands of hosts.
        return sorted(wanted, key=self._position.__getitem__)

    def select(self, pattern: str | None, *, base_dir: Path | None = None) -> list[Host]:
        """The hosts a ``--limit`` pattern names, in inventory order (None selects all)."""
        if pattern is None or pattern.strip() == "":
            if not self.hosts:
                raise InputError("the inventory has no hosts", where=self.path)
            return list(self.hosts)
        names = patterns.select(
            pattern,
            host_names=[h.name for h in self.hosts],
            group_members=lambda name: self._members(name) if name in self.groups else None,
            group_names=list(self.groups),
            base_dir=base_dir,
        )
        return [self._by_name[name] for name in names]

    def graph(self) -> str:
        """The group tree as ``ansible-inventory --graph`` draws it (children and hosts by name)."""
        lines: list[str] = []

        def label(text: str, depth: int) -> str:
            return "  |" * depth + "--" + text if depth else text

        def draw(name: str, depth: int) -> None:
            lines.append(label(f"@{name}:", depth))
            group = self.groups[name]
            for child in sorted(group.children):
                draw(child, depth + 1)
            if name != "all":
                for host in sorted(group.hosts):
                    lines.append(label(host, depth + 1))

        draw("all", 0)
        return "\n".join(lines)


def _load_inventory_file(file: Path) -> Any:
    """One inventory file as a mapping of groups: YAML or JSON by suffix, INI for ``.ini`` and for
    a file without a data suffix whose content is not YAML (Ansible's ``hosts`` files), and the
    ``ansible-inventory --list`` shape recognised by its content; an executable file starting
    with ``#!`` is a dynamic inventory script, run (:mod:`cpuu_fleet.inputs.inventory_script`)."""
    if is_inventory_script(file):
        return from_inventory_list(run_inventory_script(file), file)
    json = file.suffix.lower() == ".json"
    if file.suffix.lower() in DATA_SUFFIXES:
        data = load_data_file(file)
    else:
        text = read_text_file(file)
        if vault.is_vault_text(text):
            text = vault.decrypt(text, str(file))
        if file.suffix.lower() == ".ini" or looks_like_ini(text):
            return parse_ini(text, file)
        json = text.lstrip().startswith("{")
        data = parse_yaml(text, file)
    # ansible-inventory --list JSON (CMDB, AD, MECM exports), by content whatever the suffix.
    return from_inventory_list(data, file) if is_inventory_list(data, json=json) else data


def mask_secrets(value: Any) -> Any:
    """A copy of ``value`` in which every secret-named variable (at any depth), and the password
    of any URL, is ``********``."""
    if isinstance(value, vault.VAULT_VALUES):
        return MASK
    if isinstance(value, Mapping):
        return {
            key: MASK if isinstance(key, str) and is_secret_name(key) else mask_secrets(item)
            for key, item in value.items()
        }
    if isinstance(value, (list, tuple)):
        return [mask_secrets(item) for item in value]
    if isinstance(value, str):
        return mask_url_passwords(value)  # a proxy URL with user:password@
    return value


def _line(mapping: Any, key: Any) -> int | None:
    return mapping.line_of(key) if isinstance(mapping, LineDict) else None


def _str_keys(variables: dict, file: Path) -> dict[str, Any]:
    result: dict[str, Any] = {}
    for key, value in variables.items():
        if not isinstance(key, str) or not re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", key):
            raise InputError(
                f"variable name {key!r} is not valid (letters, digits and '_', not starting "
                "with a digit)",
                where=file,
                line=_line(variables, key),
            )
        result[key] = value
    return result


def _split_port(text: str) -> tuple[str, int | None]:
    """Ansible's ``host:port`` shorthand in a hosts mapping (not inside a ``[a:b]`` range)."""
    match = re.match(r"^(?P<name>[^:]+(?:\[[^\]]*\][^:]*)*):(?P<port>\d+)$", text)
    if match:
        return match.group("name"), int(match.group("port"))
    return text, None


def _expand_range(name: str, file: Path, line: int | None) -> list[str]:
    """``pc-[01:03]`` -> pc-01, pc-02, pc-03; letters ``[a:c]``; a stride ``[0:10:5]``."""
    match = _RANGE.search(name)
    if not match:
        return [name]
    start, end, stride = match.group(1), match.group(2), int(match.group(3) or 1)
    head, tail = name[: match.start()], name[match.end() :]
    if start.isdigit() and end.isdigit():
        width = len(start) if start.startswith("0") and len(start) > 1 else 0
        values = [str(i).zfill(width) for i in range(int(start), int(end) + 1, stride)]
    elif len(start) == 1 and len(end) == 1 and start.isalpha() and end.isalpha():
        values = [chr(c) for c in range(ord(start), ord(end) + 1, stride)]
    else:
        raise InputError(f"bad host range in {name!r}", where=file, line=line)
    if not values or stride < 1:
        raise InputError(f"empty host range in {name!r}", where=file, line=line)
    expanded: list[str] = []
    for value in values:
        expanded.extend(_expand_range(f"{head}{value}{tail}", file, line))
    return expanded


def _vars_folder(folder: Path, locked: list[Path]) -> list[tuple[str, dict[str, Any]]]:
    """Entries of group_vars/ or host_vars/: (name, vars) in a stable order, files then folders.

    A vault-encrypted file met while no vault password was given at all is added to ``locked``
    and left out, so commands that need none of its values (``inventory graph``, a host whose
    password comes from elsewhere) still work; a wrong password is an error, as in Ansible."""
    if not folder.is_dir():
        return []
    found: list[tuple[str, dict[str, Any]]] = []
    for entry in sorted(folder.iterdir(), key=lambda p: p.name):
        if entry.name.startswith(".") or entry.name.endswith("~"):
            continue
        if entry.is_dir():
            for file in sorted(p for p in entry.rglob("*") if p.is_file()):
                if file.name.startswith(".") or file.name.endswith("~"):
                    continue
                if file.suffix.lower() in DATA_SUFFIXES or file.suffix == "":
                    found.append((entry.name, _vars_file(file, locked)))
        elif entry.suffix.lower() in DATA_SUFFIXES:
            found.append((entry.stem, _vars_file(entry, locked)))
        elif entry.suffix == "":
            found.append((entry.name, _vars_file(entry, locked)))
    return found


def _vars_file(file: Path, locked: list[Path]) -> dict[str, Any]:
    try:
        data = load_data_file(file)
    except vault.VaultLocked:
        locked.append(file)
        return {}
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise InputError(
            "a vars file must be a mapping of variable names to values", where=file, line=1
        )
    variables = _str_keys(data, file)
    return vault.seal(variables) if vault.is_vault_file(file) else variables
