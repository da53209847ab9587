"""Secrets: where they come from (environment, keyring, a prompt) and how they stay hidden.

An inventory never holds a password itself: it holds an Ansible lookup such as
``"{{ lookup('env', 'CPUU_FLEET_WINRM_PASSWORD') }}"``, evaluated only when a connection or a
rendered INI needs it. What comes back is wrapped in a :class:`Secret`, which prints as ``********``
in every repr, str, f-string and log line, so a secret cannot leak by being formatted by accident.
Every revealed value is registered with the process :data:`~cpuu_fleet.redact.REDACTOR`, the last
line of defence for texts we do not control (pypsrp errors, workstation messages).

A missing secret is an :class:`~cpuu_fleet.errors.InputError` naming the host and the variable,
never an empty password sent to a workstation.
"""

from __future__ import annotations

import getpass
import os
import re
import threading
import warnings
from collections.abc import Callable, Mapping
from typing import Any

import jinja2

from cpuu_fleet.errors import InputError
from cpuu_fleet.redact import MASK, REDACTOR

__all__ = [
    "MASK",
    "AskPass",
    "AskPassLike",
    "Secret",
    "as_ask_pass",
    "is_secret_name",
    "lookup",
    "resolve",
]

# Variable (or environment variable) names that hold secrets, matched as whole words between
# underscores: ansible_password, ansible_winrm_pass, cpuu_password_trg, CPUU_FLEET_WINRM_PASSWORD.
_SECRET_WORD = re.compile(
    r"(?:^|_)(?:pass|password|passwd|pwd|secret|token|passphrase)(?:_|$)", re.IGNORECASE
)


def is_secret_name(name: str) -> bool:
    """True for names that by convention hold a secret (``*_password``, ``*_pass``, ``*_secret``)."""
    return bool(_SECRET_WORD.search(name))


class Secret:
    """A secret string that never shows itself unless asked with :meth:`reveal`.

    It can be lazy: built from a resolver that runs at the first ``reveal()``, so that loading an
    inventory or listing hosts never needs the secrets, and a missing one is only an error for the
    hosts that actually connect.
    """

    __slots__ = ("_lock", "_resolver", "_value")

    def __init__(self, value: str | None = None, *, resolver: Callable[[], str] | None = None):
        if (value is None) == (resolver is None):
            raise ValueError("a Secret needs exactly one of value or resolver")
        self._value = value
        self._resolver = resolver
        self._lock = threading.Lock()
        if value is not None:
            REDACTOR.add(value)

    @classmethod
    def lazy(cls, resolver: Callable[[], str]) -> Secret:
        return cls(resolver=resolver)

    def reveal(self) -> str:
        """The secret itself: only for the wire (WinRM logon, the INI pushed to a workstation)."""
        with self._lock:
            if self._value is None:
                assert self._resolver is not None
                value = self._resolver()
                REDACTOR.add(value)
                self._value = value
                self._resolver = None
            return self._value

    def __repr__(self) -> str:
        return f"Secret({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __format__(self, spec: str) -> str:
        return MASK

    def __reduce__(self) -> Any:
        # Pickling would write the value to disk or to another process: refuse it.
        raise TypeError("a Secret cannot be pickled")


class AskPass:
    """The ``--ask-pass`` prompt: asks the operator once per secret and remembers the answer.

    ``key`` identifies what is asked (the WinRM password, or one lookup such as an environment
    variable that is not set), so a thousand hosts sharing one password cause one prompt.
    ``prompt`` is injectable for tests; it defaults to :func:`terminal_prompt`, which never echoes
    and, without a terminal, says so in one line (exit code 2) instead of reading stdin.
    """

    def __init__(self, prompt: Callable[[str], str] | None = None):
        self._prompt = prompt or terminal_prompt
        self._answers: dict[str, str] = {}
        self._lock = threading.Lock()

    def ask(self, key: str, question: str, *, host: str, variable: str) -> str:
        with self._lock:
            if key not in self._answers:
                try:
                    answer = self._prompt(question)
                except EOFError:  # Ctrl-D, or input that ended
                    raise InputError(
                        f"no value given for {variable} at the prompt (input ended)",
                        where=f"host {host}",
                    ) from None
                if not answer:
                    raise InputError(
                        f"no value given for {variable} at the prompt (a blank secret is never used)",
                        where=f"host {host}",
                    )
                REDACTOR.add(answer)
                self._answers[key] = answer
            return self._answers[key]


def terminal_prompt(question: str) -> str:
    """:func:`getpass.getpass` on the controlling terminal, and only there.

    Without a terminal (cron, CI, ``nohup``, a pipe) getpass falls back to reading stdin with the
    secret echoed, after a warning; with nothing on stdin the command died with "Aborted." and
    exit code 1. A secret is never read from where it may be echoed: no terminal is bad input,
    said in one line, before any host is touched.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("error", getpass.GetPassWarning)
        try:
            return getpass.getpass(question)
        except getpass.GetPassWarning:
            raise InputError(
                "--ask-pass needs a terminal to type secrets in, and there is none here: run it"
                " in a terminal, or give the secrets through the environment or the keyring"
            ) from None


AskPassLike = AskPass | Callable[[str], str] | bool | None
"""What may be passed as ``ask_pass``: see :func:`as_ask_pass`."""


def as_ask_pass(value: AskPassLike) -> AskPass | None:
    """Accept what callers naturally pass for ``ask_pass``: an AskPass, a prompt function
    (``getpass.getpass``), True (prompt with getpass) or None/False (never prompt)."""
    if value is None or value is False:
        return None
    if isinstance(value, AskPass):
        return value
    if value is True:
        return AskPass()
    if callable(value):
        return AskPass(value)
    raise TypeError(
        f"ask_pass must be an AskPass, a prompt function, a bool or None, not {value!r}"
    )


# --------------------------------------------------------------------------------------------------
# Lookups, as Ansible spells them
# --------------------------------------------------------------------------------------------------

_ENV_NAMES = {"env", "ansible.builtin.env"}
_KEYRING_NAMES = {"keyring", "community.general.keyring"}


def _where(host: str, variable: str | None) -> str:
    return f"host {host}, variable {variable}" if variable else f"host {host}"


def lookup(
    kind: str,
    *terms: Any,
    host: str,
    variable: str | None,
    ask_pass: AskPassLike = None,
    default: str | None = None,
) -> str:
    """Evaluate one ``lookup(kind, ...)`` the way Ansible would, but strictly.

    Supported: ``env`` (``ansible.builtin.env``) with an optional ``default=``, and ``keyring``
    (``community.general.keyring``) as ``lookup('keyring', 'service', 'user')`` or Ansible's
    one-string form ``lookup('community.general.keyring', 'service user')``.
    Unlike Ansible, an unset or empty environment variable is an error (not ``""``): a blank
    password must never reach a workstation. With ``--ask-pass`` the operator is prompted instead.
    """
    where = _where(host, variable)
    ask_pass = as_ask_pass(ask_pass)
    if kind in _ENV_NAMES:
        if len(terms) != 1 or not isinstance(terms[0], str) or not terms[0]:
            raise InputError(
                "lookup('env', NAME) takes exactly one environment variable name", where=where
            )
        name = terms[0]
        value = os.environ.get(name)
        if value:
            return value
        if default is not None:
            return default
        if ask_pass is not None:
            return ask_pass.ask(
                f"env:{name}",
                f"{variable or name} (environment variable {name} is not set): ",
                host=host,
                variable=variable or name,
            )
        state = "is empty" if value == "" else "is not set"
        raise InputError(f"environment variable {name} {state}", where=where)
    if kind in _KEYRING_NAMES:
        if len(terms) == 1 and isinstance(terms[0], str) and len(terms[0].split()) == 2:
            service, user = terms[0].split()
        elif len(terms) == 2 and all(isinstance(t, str) and t for t in terms):
            service, user = terms
        else:
            raise InputError(
                "lookup('keyring', SERVICE, USER) takes a service and a user name", where=where
            )
        value = _keyring_get(service, user, where)
        if value:
            return value
        if ask_pass is not None:
            return ask_pass.ask(
                f"keyring:{service}:{user}",
                f"{variable or 'password'} (no keyring entry for service {service!r}, user {user!r}): ",
                host=host,
                variable=variable or f"keyring {service}/{user}",
            )
        raise InputError(f"no keyring entry for service {service!r}, user {user!r}", where=where)
    raise InputError(
        f"lookup({kind!r}) is not supported: use 'env' or 'keyring' lookups for secrets",
        where=where,
    )


def _keyring_get(service: str, user: str, where: str) -> str | None:
    try:
        import keyring
        from keyring.errors import KeyringError
    except ImportError:  # pragma: no cover - keyring is a declared dependency
        raise InputError("the keyring package is not installed", where=where) from None
    try:
        return keyring.get_password(service, user)
    except KeyringError as exc:
        # The message of a keyring backend error names the backend, never the secret.
        raise InputError(
            f"keyring unavailable ({type(exc).__name__}: {exc})", where=where
        ) from None


# --------------------------------------------------------------------------------------------------
# Resolving one variable's value
# --------------------------------------------------------------------------------------------------

_JINJA_MARKERS = ("{{", "{%", "{#")
_SECRET_ENV = jinja2.Environment(undefined=jinja2.StrictUndefined, autoescape=False)


def has_template(value: object) -> bool:
    return isinstance(value, str) and any(marker in value for marker in _JINJA_MARKERS)


class _LookupOnly(Mapping[str, Any]):
    """Template scope for a lone secret: the ``lookup`` function and Jinja's globals, nothing else."""

    def __init__(self, func: Callable[..., str]):
        self._func = func

    def __getitem__(self, key: str) -> Any:
        if key in ("lookup", "query", "q"):
            return self._func
        return _SECRET_ENV.globals[key]

    def __iter__(self):  # pragma: no cover - Jinja only looks keys up
        return iter(("lookup", *_SECRET_ENV.globals))

    def __len__(self) -> int:  # pragma: no cover
        return 1 + len(_SECRET_ENV.globals)

    def __contains__(self, key: object) -> bool:
        return key in ("lookup", "query", "q") or key in _SECRET_ENV.globals


def render_lookups(text: str, *, host: str, variable: str, ask_pass: AskPassLike) -> str:
    """Evaluate a value made only of lookups (and literal text); other variables are not in scope."""

    def call(kind: str, *terms: Any, default: str | None = None, **_: Any) -> str:
        return lookup(
            kind, *terms, host=host, variable=variable, ask_pass=ask_pass, default=default
        )

    where = _where(host, variable)
    try:
        template = _SECRET_ENV.from_string(text)
    except jinja2.TemplateSyntaxError as exc:
        raise InputError(
            f"template syntax error in the value: {exc.message}", where=where
        ) from None
    try:
        context = template.new_context(_LookupOnly(call), shared=True)
        return _SECRET_ENV.concat(template.root_render_func(context))  # type: ignore[attr-defined]
    except jinja2.UndefinedError as exc:
        raise InputError(
            f"the value refers to something undefined ({exc.message}); a secret may only use "
            "env or keyring lookups",
            where=where,
        ) from None


def resolve(value: object, *, host: str, variable: str, ask_pass: AskPassLike = None) -> Secret:
    """Turn a variable's raw value (literal or lookups) into a revealed :class:`Secret`.

    ``None`` (the variable is not set) asks the operator when ``ask_pass`` is given, else it is an
    error naming the host and the variable; so is a value that evaluates to an empty string.
    """
    ask_pass = as_ask_pass(ask_pass)
    if value is None:
        if ask_pass is None:
            raise InputError(f"{variable} is not set", where=f"host {host}")
        answer = ask_pass.ask(
            f"var:{variable}", f"{variable} for {host}: ", host=host, variable=variable
        )
        return Secret(answer)
    if isinstance(value, Secret):
        return value
    if not isinstance(value, str):
        raise InputError(
            f"{variable} must be a string, not {type(value).__name__}", where=f"host {host}"
        )
    text = (
        render_lookups(value, host=host, variable=variable, ask_pass=ask_pass)
        if has_template(value)
        else value
    )
    if not text:
        raise InputError(
            f"{variable} is empty (a blank secret is never used)", where=f"host {host}"
        )
    return Secret(text)
