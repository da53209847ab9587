"""A host's variables as templates see them: templated lazily, the way Ansible does it.

In an Ansible inventory any value may be a template (``ansible_host: "{{ inventory_hostname }}.corp"``,
``cpuu_password: "{{ lookup('env', 'X') }}"``). Values are templated only when something uses
them, so a secret that no template needs is never looked up, and a missing one is an error only
where it matters.

A scope works in one of two modes. *Reveal* gives real values (what goes on the wire). *Mask* gives
``********`` for every secret: a variable with a secret-like name, a keyring lookup, an environment
variable with a secret-like name, a prompt answer. Rendering the same template in both modes gives
the file a workstation receives and a copy that is safe to keep for review.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import jinja2

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs import ansible_filters, credentials, vault
from cpuu_fleet.inputs.credentials import MASK, AskPass, has_template, is_secret_name


class Unsafe(str):
    """A value marked ``!unsafe`` in YAML, as in Ansible: used literally, never templated."""

    __slots__ = ()


def make_environment(loader: jinja2.BaseLoader | None = None) -> jinja2.Environment:
    """The one Jinja environment flavour of cpuu-fleet: strict about undefined names.

    ``keep_trailing_newline`` so a file keeps its last line ending; no autoescape (INI and batch
    files are not HTML). ``trim_blocks`` is on as in Ansible's template modules, so a
    ``{% if %}`` line does not leave a blank line behind.
    """
    environment = jinja2.Environment(
        loader=loader,
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
    )
    ansible_filters.install(environment)
    environment.filters.update(bool=to_bool, win_args=win_args, bat_args=bat_args)
    return environment


_COMPILED: dict[tuple[int, str], jinja2.Template] = {}


def compile_value(environment: jinja2.Environment, text: str) -> jinja2.Template:
    """Compile a variable's template once per environment: thousands of hosts share the same
    group_vars values, and compiling is the costly part of templating them."""
    key = (id(environment), text)
    template = _COMPILED.get(key)
    if template is None:
        template = environment.from_string(text)
        if len(_COMPILED) < 10000:
            _COMPILED[key] = template
    return template


_TRUE_WORDS = {"true", "yes", "on", "1", "y"}
_FALSE_WORDS = {"false", "no", "off", "0", "n"}
_NEEDS_QUOTES = re.compile(r"[\s&|<>^(),;=]")


def bool_word(value: Any) -> bool | None:
    """Ansible's boolean words (yes/no, on/off, true/false, 1/0, y/n); None for anything else.

    The one list both the templates' ``bool`` filter and the connection settings read.
    """
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in _TRUE_WORDS:
        return True
    if text in _FALSE_WORDS:
        return False
    return None


def to_bool(value: Any) -> bool:
    """Ansible's ``bool`` filter: yes/no, on/off, true/false, 1/0 as written in YAML or INI files."""
    if isinstance(value, str) and not value.strip():
        return False
    parsed = bool_word(value)
    if parsed is not None:
        return parsed
    raise InputError(f"{value!r} is not a boolean (true/false, yes/no, on/off, 1/0)")


def win_args(value: Any) -> str:
    """A list (or one value) as space-separated Windows arguments, quoted where needed.

    Used for CPUU's space-separated lists (``-Profiles``, ``AllowAdditionalServices``). A double
    quote or a line break cannot be passed safely, so a value holding one is refused.
    """
    items = value if isinstance(value, (list, tuple)) else [value]
    words = []
    for item in items:
        text = str(item)
        if '"' in text or "\n" in text or "\r" in text:
            raise InputError(
                f"{text!r} cannot be passed as a Windows argument (quote or line break)"
            )
        words.append(f'"{text}"' if not text or _NEEDS_QUOTES.search(text) else text)
    return " ".join(words)


def bat_args(value: Any) -> str:
    """:func:`win_args` for a batch file, where ``%`` must be doubled to stay literal."""
    return win_args(value).replace("%", "%%")


class UndefinedVariable(InputError):
    """A template or a value used a variable (or a key of one) the host does not have.

    ``name`` is what Jinja reported missing: ``'site'``, or for ``x['undo']`` / ``x.undo``
    ``"key 'undo' of a dict object"``.
    """

    def __init__(
        self,
        name: str,
        *,
        host: str,
        inside: str | None = None,
        where: str | None = None,
        line: int | None = None,
        note: str | None = None,
    ):
        self.name = name
        self.host = host
        self.inside = inside
        detail = f" (used in the value of {inside!r})" if inside else ""
        what = name if name.startswith("key ") else f"variable {name!r}"
        where_text = where if where is not None else f"host {host}"
        prefix = f"host {host}: " if where is not None else ""
        if note:
            detail = f"{detail}; {note}"
        super().__init__(f"{prefix}undefined {what}{detail}", where=where_text, line=line)


def undefined_name(exc: jinja2.UndefinedError) -> str:
    """What is missing, from Jinja's message (``'x' is undefined``, ``'dict object' has no
    attribute 'y'``)."""
    message = exc.message or ""
    if " is undefined" in message:
        return message.split(" is undefined")[0].strip("'\"")
    if " has no attribute " in message:
        owner, _, attribute = message.partition(" has no attribute ")
        return f"key {attribute} of a {owner.strip(chr(39))}"
    return message


class Deferred:
    """A variable whose value could not be worked out: harmless until a template really uses it.

    Jinja looks up every name a template mentions when it starts, even those inside an
    ``{% if %}`` branch that is never taken. Deferring the error to the moment the value is
    printed, compared or iterated keeps a missing secret from failing templates that do not use
    it, and lets the error point at the template line that does.
    """

    __slots__ = ("_error",)

    def __init__(self, error: InputError):
        self._error = error

    def _fail(self, *args: Any, **kwargs: Any) -> Any:
        raise self._error.with_traceback(None)

    def __repr__(self) -> str:  # debuggers and tracebacks must not fail (messages hold no secret)
        return f"<unavailable: {self._error.render()}>"

    __str__ = __iter__ = __len__ = __bool__ = __call__ = _fail
    __eq__ = __ne__ = __lt__ = __le__ = __gt__ = __ge__ = __contains__ = _fail
    __add__ = __radd__ = __mul__ = __mod__ = __int__ = __float__ = __getitem__ = _fail
    __hash__ = None  # type: ignore[assignment]

    def __getattr__(self, name: str) -> Any:
        raise self._error.with_traceback(None)


class JinjaView(Mapping[str, Any]):
    """What a Jinja context sees of a :class:`HostScope`: errors are :class:`Deferred`."""

    def __init__(self, scope: HostScope):
        self._scope = scope

    def __contains__(self, key: object) -> bool:
        return key in self._scope

    def __getitem__(self, key: str) -> Any:
        try:
            return self._scope[key]
        except InputError as exc:
            return Deferred(exc)

    def __iter__(self) -> Iterator[str]:
        return iter(self._scope)

    def __len__(self) -> int:
        return len(self._scope)

    def copy(self) -> dict[str, Any]:
        return self._scope.copy()


class HostScope(Mapping[str, Any]):
    """The variables of one host for one rendering, templated on first use and then cached.

    ``variables`` are the host's merged raw values; ``magic`` holds names set by cpuu-fleet
    (``inventory_hostname``, ``mode``...) that are never templated. ``revealed`` collects every
    secret value handed out in reveal mode, so a masked copy can be checked against them.
    """

    def __init__(
        self,
        host: str,
        variables: Mapping[str, Any],
        *,
        environment: jinja2.Environment,
        reveal: bool,
        ask_pass: AskPass | None = None,
        magic: Mapping[str, Any] | None = None,
        missing_note: str | None = None,
        reveal_vault: bool = False,
    ):
        self.host = host
        self.reveal_vault = reveal_vault
        """In mask mode, still decrypt vault values (registered with the redactor): for settings
        such as ``ansible_user`` that must be real even where secrets are masked."""
        self.missing_note = missing_note
        """Said with every undefined variable (vault files left unread for want of a password)."""
        self._raw = dict(variables)
        self._magic = dict(magic or {})
        self._env = environment
        self._reveal = reveal
        self._ask_pass = ask_pass
        self._cache: dict[str, Any] = {}
        self._stack: list[str] = []
        self.revealed: set[str] = set()

    # -- Mapping -------------------------------------------------------------------------------
    def __contains__(self, key: object) -> bool:
        return (
            key in self._magic
            or key in self._raw
            or key in ("lookup", "query", "q")
            or key in self._env.globals
        )

    # Iterating yields only the names already evaluated (and the magic ones): Jinja iterates a
    # context only to copy it (includes, traceback locals), and that must not look every secret up.
    def __iter__(self) -> Iterator[str]:
        return iter(self.copy())

    def __len__(self) -> int:
        return len(self.copy())

    def copy(self) -> dict[str, Any]:
        """The values evaluated so far, secrets left out (Jinja copies contexts for tracebacks)."""
        evaluated = {
            k: v
            for k, v in self._cache.items()
            if not is_secret_name(k) and not isinstance(self._raw.get(k), vault.VAULT_VALUES)
        }
        return {**evaluated, **self._magic}

    def __getitem__(self, key: str) -> Any:
        if key in self._magic:
            return self._magic[key]
        if key in ("lookup", "query", "q"):
            return self._lookup_function()
        if key not in self._raw:
            if key in self._env.globals:
                return self._env.globals[key]
            raise KeyError(key)
        if key in self._cache:
            return self._cache[key]
        if key in self._stack:
            chain = " -> ".join([*self._stack[self._stack.index(key) :], key])
            raise InputError(
                f"variable {key!r} refers to itself ({chain})", where=f"host {self.host}"
            )
        if not self._reveal and is_secret_name(key):
            value: Any = MASK
        else:
            self._stack.append(key)
            try:
                value = self._template(self._raw[key], key)
            finally:
                self._stack.pop()
            if self._reveal and is_secret_name(key) and isinstance(value, str) and value:
                self._note_secret(value)
        self._cache[key] = value
        return value

    # -- templating ----------------------------------------------------------------------------
    def value(self, key: str, default: Any = None) -> Any:
        """A templated value, or ``default`` when the host does not define it."""
        return self[key] if key in self._raw or key in self._magic else default

    def _note_secret(self, value: str) -> None:
        self.revealed.add(value)
        credentials.REDACTOR.add(value)

    def _template(self, raw: Any, variable: str) -> Any:
        if isinstance(raw, vault.VAULT_VALUES):
            return self._unvault(raw, variable)
        if isinstance(raw, Unsafe):
            return str(raw)
        if isinstance(raw, str):
            if not has_template(raw):
                return raw
            return self.render_string(raw, variable=variable)
        if isinstance(raw, Mapping):
            return {k: self._template(v, variable) for k, v in raw.items()}
        if isinstance(raw, (list, tuple)):
            return [self._template(v, variable) for v in raw]
        return raw

    def _unvault(self, raw: vault.VaultText | vault.Vaulted, variable: str) -> Any:
        """A vault value is a secret whatever its name: masked, or decrypted only when revealed
        (a template that uses it in mask mode gets ``********`` too)."""
        if not self._reveal and not self.reveal_vault:
            return MASK
        value = self._template(raw.reveal(), variable)
        if isinstance(value, str) and value:
            if self._reveal:
                self.revealed.add(value)
            credentials.REDACTOR.add(value)
        return value

    def render_string(self, text: str, *, variable: str) -> str:
        """Template one value; errors name the host and the variable."""
        try:
            template = compile_value(self._env, text)
        except jinja2.TemplateSyntaxError as exc:
            raise InputError(
                f"template syntax error in variable {variable!r}: {exc.message}",
                where=f"host {self.host}",
            ) from None
        try:
            context = template.new_context(JinjaView(self), shared=True)
            return self._env.concat(template.root_render_func(context))  # type: ignore[attr-defined]
        except jinja2.UndefinedError as exc:
            raise UndefinedVariable(
                undefined_name(exc), host=self.host, inside=variable, note=self.missing_note
            ) from None

    def _lookup_function(self) -> Callable[..., str]:
        variable = self._stack[-1] if self._stack else None

        def call(kind: str, *terms: Any, default: str | None = None, **_: Any) -> str:
            secret = kind in ("keyring", "community.general.keyring") or (
                bool(terms) and isinstance(terms[0], str) and is_secret_name(terms[0])
            )
            secret = secret or (variable is not None and is_secret_name(variable))
            if secret and not self._reveal:
                return MASK
            result = credentials.lookup(
                kind,
                *terms,
                host=self.host,
                variable=variable,
                ask_pass=self._ask_pass,
                default=default,
            )
            if secret:
                self._note_secret(result)
            return result

        return call
