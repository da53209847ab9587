"""Ansible Vault: files and inline ``!vault`` values encrypted by ``ansible-vault``, read in memory.

Written from Ansible's documented format ("Vault format" in the Ansible docs), not from its code
(ansible-core is GPL; cpuu-fleet is MIT). A vault text is a header line
``$ANSIBLE_VAULT;1.1;AES256`` (or ``$ANSIBLE_VAULT;1.2;AES256;<vault-id>``) followed by lines of
hex. Unhexlified, they are three hex lines: the salt, an HMAC-SHA256 and the ciphertext.
PBKDF2-HMAC-SHA256 over the password and the salt (10000 iterations) gives 80 bytes: the AES-256
key, the HMAC key and the 16-byte CTR counter. The HMAC covers the ciphertext and is checked
before anything is decrypted; the plaintext carries PKCS#7 padding.

Passwords come from :class:`VaultSecrets` (``--vault-password-file``, ``--vault-id``,
``--ask-vault-pass``, or the environment); each is read only when a vault text is first
decrypted, so a command that never meets a vault text never reads a password file nor prompts.
Decrypted values are secrets: they are registered with the redactor when revealed, and the
wrappers here print as ``********``.

The CLI sets the process's secrets once (:func:`use`), as the redactor is process-wide, so every
inventory a command loads (the wave engine's included) decrypts with them.
"""

from __future__ import annotations

import binascii
import hmac
import os
import stat
import subprocess
import threading
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import hashes, padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.kdf.pbkdf2 import PBKDF2HMAC

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.ansible_cfg import load_ansible_cfg
from cpuu_fleet.redact import MASK, REDACTOR

__all__ = [
    "HEADER",
    "VaultSecrets",
    "VaultText",
    "Vaulted",
    "active",
    "decrypt",
    "encrypt",
    "is_vault_text",
    "use",
]

HEADER = "$ANSIBLE_VAULT;"
DEFAULT_ID = "default"
_ITERATIONS = 10000
_KEY_BYTES = 32
_IV_BYTES = 16
_SALT_BYTES = 32
_SCRIPT_TIMEOUT = 60
"""Seconds a vault password script may take (it may ask a password manager; not a guard rail
for scripts that hang forever, which then fail in one line)."""
_MAX_VAULT_CHARS = 64 * 1024 * 1024
"""A vault text larger than this is refused before hexlifying (vars files are kilobytes)."""


def is_vault_text(text: str) -> bool:
    """True when ``text`` is an ansible-vault envelope (a whole encrypted file or inline value)."""
    return text.lstrip().startswith(HEADER)


def is_vault_file(path: Path) -> bool:
    """True for a file encrypted whole with ansible-vault (its values are all secrets)."""
    try:
        with path.open("rb") as handle:
            head = handle.read(64)
    except OSError:
        return False
    return head.lstrip(b"\xef\xbb\xbf \t\r\n").startswith(HEADER.encode("ascii"))


# ------------------------------------------------------------------------------- the envelope


@dataclass(frozen=True)
class _Envelope:
    vault_id: str | None
    salt: bytes
    mac: bytes
    ciphertext: bytes


def _parse(text: str, where: str) -> _Envelope:
    lines = [line.strip() for line in text.strip().splitlines()]
    header = lines[0].split(";")
    if len(header) not in (3, 4) or header[0] != HEADER[:-1]:
        raise InputError("not an Ansible Vault text (bad header line)", where=where)
    version, cipher = header[1], header[2].strip()
    if version not in ("1.1", "1.2") or cipher != "AES256":
        raise InputError(
            f"Ansible Vault format {version} with cipher {cipher} is not supported "
            "(1.1 and 1.2 with AES256 are)",
            where=where,
        )
    vault_id = header[3].strip() if len(header) == 4 else None
    body = "".join(lines[1:])
    if len(body) > _MAX_VAULT_CHARS:
        raise InputError("Ansible Vault text too large", where=where)
    try:
        inner = binascii.unhexlify(body).decode("ascii").split("\n")
        salt, mac, ciphertext = (binascii.unhexlify(part) for part in inner)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise InputError(
            "the Ansible Vault text is damaged (not the hex envelope ansible-vault writes)",
            where=where,
        ) from None
    return _Envelope(vault_id, salt, mac, ciphertext)


def _keys(password: bytes, salt: bytes) -> tuple[bytes, bytes, bytes]:
    kdf = PBKDF2HMAC(
        algorithm=hashes.SHA256(),
        length=2 * _KEY_BYTES + _IV_BYTES,
        salt=salt,
        iterations=_ITERATIONS,
    )
    derived = kdf.derive(password)
    return derived[:_KEY_BYTES], derived[_KEY_BYTES : 2 * _KEY_BYTES], derived[2 * _KEY_BYTES :]


def _mac(key: bytes, ciphertext: bytes) -> bytes:
    return hmac.new(key, ciphertext, "sha256").digest()


def _try_password(envelope: _Envelope, password: bytes) -> bytes | None:
    """The plaintext, or None when the HMAC says this is not the password (or the text changed)."""
    cipher_key, mac_key, counter = _keys(password, envelope.salt)
    if not hmac.compare_digest(_mac(mac_key, envelope.ciphertext), envelope.mac):
        return None
    decryptor = Cipher(algorithms.AES(cipher_key), modes.CTR(counter)).decryptor()
    padded = decryptor.update(envelope.ciphertext) + decryptor.finalize()
    unpadder = padding.PKCS7(algorithms.AES.block_size).unpadder()
    try:
        return unpadder.update(padded) + unpadder.finalize()
    except ValueError:
        return None


def encrypt(
    plaintext: str, password: str, *, vault_id: str | None = None, salt: bytes | None = None
) -> str:
    """A vault text as ``ansible-vault encrypt`` writes it (1.2 with a vault id, else 1.1).

    cpuu-fleet never writes vault files itself; this is the inverse of :func:`decrypt`, for tests
    and for operators who script fixtures.
    """
    salt = salt or os.urandom(_SALT_BYTES)
    cipher_key, mac_key, counter = _keys(password.encode("utf-8"), salt)
    padder = padding.PKCS7(algorithms.AES.block_size).padder()
    padded = padder.update(plaintext.encode("utf-8")) + padder.finalize()
    encryptor = Cipher(algorithms.AES(cipher_key), modes.CTR(counter)).encryptor()
    ciphertext = encryptor.update(padded) + encryptor.finalize()
    inner = b"\n".join(
        binascii.hexlify(part) for part in (salt, _mac(mac_key, ciphertext), ciphertext)
    )
    body = binascii.hexlify(inner).decode("ascii")
    header = f"{HEADER}1.2;AES256;{vault_id}" if vault_id else f"{HEADER}1.1;AES256"
    return "\n".join([header, *(body[i : i + 80] for i in range(0, len(body), 80))]) + "\n"


def decrypt(text: str, where: str, secrets: VaultSecrets | None = None) -> str:
    """The plaintext of a vault text, trying the password whose vault id matches first.

    No password at all, or none that fits (wrong password, or the text was altered: the HMAC
    cannot tell them apart), is one :class:`~cpuu_fleet.errors.InputError` naming ``where``.
    """
    secrets = secrets if secrets is not None else active()
    envelope = _parse(text, where)
    if not secrets.configured:
        raise VaultLocked(where)
    tried = 0
    for label, password in secrets.passwords(prefer=envelope.vault_id):
        tried += 1
        plaintext = _try_password(envelope, password.encode("utf-8"))
        if plaintext is not None:
            try:
                return plaintext.decode("utf-8")
            except UnicodeDecodeError:
                raise InputError(
                    f"the vault text decrypted with vault id {label!r} is not UTF-8 text",
                    where=where,
                ) from None
    labelled = f" (it is labelled with vault id {envelope.vault_id!r})" if envelope.vault_id else ""
    raise InputError(
        f"cannot decrypt this Ansible Vault text{labelled}: none of the {tried} vault "
        "password(s) given fits (a wrong password, or the file was altered: its HMAC does not "
        "match)",
        where=where,
    )


class VaultLocked(InputError):
    """A vault text met while no vault password was given at all."""

    def __init__(self, where: str):
        super().__init__(
            "is encrypted with Ansible Vault and no vault password was given (use "
            "--vault-password-file FILE, --vault-id LABEL@FILE, --ask-vault-pass, or "
            "ANSIBLE_VAULT_PASSWORD_FILE)",
            where=where,
        )


# ---------------------------------------------------------------------------- the passwords


class VaultSecrets:
    """The vault passwords of this command, each read at its first use and then remembered.

    A source is ``prompt`` (ask on the terminal, never echoed), a plain file (its text, trailing
    whitespace stripped, as Ansible does), an executable file (run; its standard output is the
    password, as Ansible does; a name ending in ``-client`` gets ``--vault-id LABEL`` as Ansible's
    client scripts do), or ``env:NAME`` (an environment variable holding the password itself).
    """

    def __init__(
        self,
        sources: list[tuple[str, str]] | None = None,
        *,
        prompt: Callable[[str], str] | None = None,
    ):
        self._sources = list(sources or [])
        self._prompt = prompt
        self._cache: dict[int, str] = {}
        self._lock = threading.Lock()

    @property
    def configured(self) -> bool:
        return bool(self._sources)

    @property
    def labels(self) -> list[str]:
        return [label for label, _ in self._sources]

    def passwords(self, *, prefer: str | None = None) -> Iterator[tuple[str, str]]:
        """``(label, password)`` pairs, the ones labelled ``prefer`` first, then the others (as
        Ansible does unless told to match vault ids strictly)."""
        order = sorted(range(len(self._sources)), key=lambda i: self._sources[i][0] != prefer)
        for index in order:
            yield self._sources[index][0], self._password(index)

    def _password(self, index: int) -> str:
        with self._lock:
            if index not in self._cache:
                label, source = self._sources[index]
                password = self._read(label, source)
                if not password:
                    raise InputError(f"the vault password for vault id {label!r} is empty")
                REDACTOR.add(password)
                self._cache[index] = password
            return self._cache[index]

    def _read(self, label: str, source: str) -> str:
        if source == "prompt":
            from cpuu_fleet.inputs.credentials import terminal_prompt

            prompt = self._prompt or terminal_prompt
            suffix = "" if label == DEFAULT_ID else f" ({label})"
            try:
                return prompt(f"Vault password{suffix}: ")
            except EOFError:
                raise InputError("no vault password given at the prompt (input ended)") from None
            except InputError:  # no terminal: say it for the vault option, not --ask-pass
                raise InputError(
                    "--ask-vault-pass needs a terminal to type the vault password in, and there "
                    "is none here: use --vault-password-file or ANSIBLE_VAULT_PASSWORD_FILE"
                ) from None
        if source.startswith("env:"):
            name = source[4:]
            return os.environ.get(name, "")
        return _read_password_file(Path(source), label)


def _read_password_file(path: Path, label: str) -> str:
    try:
        mode = path.stat().st_mode
    except OSError as exc:
        raise InputError(
            f"cannot read the vault password file ({exc.strerror})", where=path
        ) from None
    if stat.S_ISREG(mode) and mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        return _run_password_script(path, label)
    try:
        return path.read_text(encoding="utf-8").rstrip()
    except (OSError, UnicodeDecodeError) as exc:
        why = getattr(exc, "strerror", None) or "not UTF-8 text"
        raise InputError(f"cannot read the vault password file ({why})", where=path) from None


def _run_password_script(path: Path, label: str) -> str:
    """An executable password file is run, as Ansible does; its stdout is the password. Its
    stderr is not echoed (it may hold anything), only its exit status."""
    command = [str(path.resolve())]
    if path.stem.endswith("-client"):
        command += ["--vault-id", label]
    try:
        done = subprocess.run(
            command, capture_output=True, timeout=_SCRIPT_TIMEOUT, stdin=subprocess.DEVNULL
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        why = "timed out" if isinstance(exc, subprocess.TimeoutExpired) else exc.strerror
        raise InputError(f"vault password script could not run ({why})", where=path) from None
    if done.returncode != 0:
        raise InputError(f"vault password script failed (exit code {done.returncode})", where=path)
    try:
        return done.stdout.decode("utf-8").strip()
    except UnicodeDecodeError:
        raise InputError("vault password script printed no UTF-8 text", where=path) from None


ENV_PASSWORD_FILE = "ANSIBLE_VAULT_PASSWORD_FILE"
ENV_PASSWORD = "CPUU_FLEET_VAULT_PASSWORD"


def secrets_from_options(
    *,
    password_files: list[Path] | None = None,
    vault_ids: list[str] | None = None,
    ask: bool = False,
    environ: dict[str, str] | None = None,
    prompt: Callable[[str], str] | None = None,
) -> VaultSecrets:
    """The sources the command line names; without any, those the environment names
    (``ANSIBLE_VAULT_PASSWORD_FILE``, then ``CPUU_FLEET_VAULT_PASSWORD``), else ``ansible.cfg``'s."""
    environ = os.environ if environ is None else environ
    sources: list[tuple[str, str]] = []
    for vault_id in vault_ids or []:
        label, sep, source = vault_id.partition("@")
        if not sep:
            label, source = DEFAULT_ID, vault_id
        if not label or not source:
            raise InputError("--vault-id takes LABEL@FILE or LABEL@prompt (a label and a source)")
        sources.append((label, source))
    sources += [(DEFAULT_ID, str(path)) for path in password_files or []]
    if ask:
        sources.append((DEFAULT_ID, "prompt"))
    if not sources and environ.get(ENV_PASSWORD_FILE):
        sources.append((DEFAULT_ID, environ[ENV_PASSWORD_FILE]))
    if not sources and environ.get(ENV_PASSWORD):
        sources.append((DEFAULT_ID, f"env:{ENV_PASSWORD}"))
    if not sources:
        sources = _ansible_cfg_sources(environ)
    return VaultSecrets(sources, prompt=prompt)


def _ansible_cfg_sources(environ: Mapping[str, str]) -> list[tuple[str, str]]:
    """``vault_identity_list`` and ``vault_password_file`` of the ``ansible.cfg`` Ansible would
    read: the last place looked, as in Ansible (a relative file is relative to that file)."""
    cfg = load_ansible_cfg(environ=environ)
    sources = []
    for vault_id in cfg.vault_ids:
        label, sep, source = vault_id.partition("@")
        if sep and label and source:
            path = Path(source).expanduser()
            if source != "prompt" and not path.is_absolute() and cfg.path is not None:
                source = str(cfg.path.parent / path)
            sources.append((label, source))
    sources += [(DEFAULT_ID, str(path)) for path in cfg.vault_password_files]
    return sources


_ACTIVE = [VaultSecrets()]


def use(secrets: VaultSecrets) -> VaultSecrets:
    """Make ``secrets`` the process's vault passwords (the CLI does, once per command); returns
    the previous ones so a test can put them back."""
    previous, _ACTIVE[0] = _ACTIVE[0], secrets
    return previous


def active() -> VaultSecrets:
    """The process's vault passwords (none until the CLI or a test calls :func:`use`)."""
    return _ACTIVE[0]


# ----------------------------------------------------------------------------- the values


class _Sealed:
    """What a vault value shows of itself: ``********`` in every repr and str; never pickled."""

    __slots__ = ()

    def __repr__(self) -> str:
        return f"{type(self).__name__}({MASK!r})"

    def __str__(self) -> str:
        return MASK

    def __reduce__(self) -> Any:
        raise TypeError("a vault value cannot be pickled")


class VaultText(_Sealed):
    """An inline ``!vault |`` value: kept encrypted until a host really uses it."""

    __slots__ = ("_plain", "ciphertext", "where")

    def __init__(self, ciphertext: str, where: str):
        self.ciphertext = ciphertext
        self.where = where
        self._plain: str | None = None

    def reveal(self, secrets: VaultSecrets | None = None) -> str:
        """The decrypted string (decrypted once, then registered with the redactor)."""
        if self._plain is None:
            plain = decrypt(self.ciphertext, self.where, secrets)
            REDACTOR.add(plain)
            self._plain = plain
        return self._plain


class Vaulted(_Sealed):
    """A value that came out of an encrypted vars file: a secret whatever its name."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def reveal(self, secrets: VaultSecrets | None = None) -> Any:
        """The value, its strings registered with the redactor (it was decrypted at loading)."""
        for leaf in _string_leaves(self.value):
            REDACTOR.add(leaf)
        return self.value


def _string_leaves(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _string_leaves(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _string_leaves(item)


VAULT_VALUES = (VaultText, Vaulted)
"""The types a variable's raw value has when it is a vault secret."""


def seal(variables: dict[str, Any]) -> dict[str, Any]:
    """The vars of a decrypted file, each value marked as a secret (masked wherever shown)."""
    return {key: Vaulted(value) for key, value in variables.items()}
