"""Secrets: env and keyring lookups, --ask-pass, and never a blank or printed password."""

from __future__ import annotations

import logging
import pickle

import pytest

from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs.credentials import AskPass, Secret, resolve
from cpuu_fleet.inputs.inventory import Inventory
from cpuu_fleet.redact import REDACTOR


def test_a_secret_never_shows_itself(caplog):
    secret = Secret("Tr0ub4dor&3")
    assert repr(secret) == "Secret('********')"
    assert str(secret) == "********"
    assert f"{secret}" == "********" and f"{secret!r}" == "Secret('********')"
    assert format(secret, "s") == "********"
    logging.getLogger("test").warning("password is %s", secret)
    assert "Tr0ub4dor&3" not in caplog.text
    with pytest.raises(TypeError):
        pickle.dumps(secret)
    assert secret.reveal() == "Tr0ub4dor&3"
    assert REDACTOR.scrub("error: Tr0ub4dor&3 refused") == "error: ******** refused"


def test_env_lookup(monkeypatch):
    monkeypatch.setenv("CPUU_FLEET_WINRM_PASSWORD", "from-env-123")
    value = "{{ lookup('env', 'CPUU_FLEET_WINRM_PASSWORD') }}"
    assert resolve(value, host="pc-1", variable="ansible_password").reveal() == "from-env-123"
    fqcn = "{{ lookup('ansible.builtin.env', 'CPUU_FLEET_WINRM_PASSWORD') }}"
    assert resolve(fqcn, host="pc-1", variable="ansible_password").reveal() == "from-env-123"


@pytest.mark.parametrize("env_value", [None, ""])
def test_missing_env_secret_names_host_and_variable(monkeypatch, env_value):
    if env_value is None:
        monkeypatch.delenv("CPUU_FLEET_CPUU_PASSWORD", raising=False)
    else:
        monkeypatch.setenv("CPUU_FLEET_CPUU_PASSWORD", env_value)
    with pytest.raises(InputError) as err:
        resolve(
            "{{ lookup('env', 'CPUU_FLEET_CPUU_PASSWORD') }}",
            host="pc-0042",
            variable="cpuu_password",
        )
    text = err.value.render()
    assert "pc-0042" in text and "cpuu_password" in text and "CPUU_FLEET_CPUU_PASSWORD" in text


def test_keyring_lookup_both_spellings(memory_keyring):
    memory_keyring.set_password("cpuu-fleet", "winrm", "from-keyring-456")
    for value in (
        "{{ lookup('keyring', 'cpuu-fleet', 'winrm') }}",
        "{{ lookup('community.general.keyring', 'cpuu-fleet winrm') }}",
    ):
        assert (
            resolve(value, host="pc-1", variable="ansible_password").reveal() == "from-keyring-456"
        )


def test_missing_keyring_entry(memory_keyring):
    with pytest.raises(InputError) as err:
        resolve(
            "{{ lookup('keyring', 'cpuu-fleet', 'nobody') }}", host="pc-7", variable="x_password"
        )
    assert "no keyring entry for service 'cpuu-fleet', user 'nobody'" in err.value.render()
    assert "pc-7" in err.value.render()


def test_blank_or_unset_secret_is_never_used():
    with pytest.raises(InputError, match="empty"):
        resolve("", host="pc-1", variable="ansible_password")
    with pytest.raises(InputError, match="ansible_password is not set"):
        resolve(None, host="pc-1", variable="ansible_password")


def test_unsupported_lookup_and_other_variables_are_refused():
    with pytest.raises(InputError, match="lookup\\('file'\\) is not supported"):
        resolve("{{ lookup('file', '/etc/shadow') }}", host="pc-1", variable="ansible_password")
    with pytest.raises(InputError, match="only use env or keyring lookups"):
        resolve("{{ other_var }}", host="pc-1", variable="ansible_password")


def test_ask_pass_prompts_once_per_secret(monkeypatch):
    monkeypatch.delenv("NOT_SET_PW", raising=False)
    questions: list[str] = []

    def prompt(question: str) -> str:
        questions.append(question)
        return "typed-secret"

    ask = AskPass(prompt)
    value = "{{ lookup('env', 'NOT_SET_PW') }}"
    for host in ("pc-1", "pc-2", "pc-3"):
        assert resolve(value, host=host, variable="ansible_password", ask_pass=ask).reveal() == (
            "typed-secret"
        )
    assert len(questions) == 1 and "NOT_SET_PW" in questions[0]


def test_ask_pass_with_an_empty_answer_is_an_error():
    ask = AskPass(lambda question: "")
    with pytest.raises(InputError, match="blank secret"):
        resolve(None, host="pc-1", variable="ansible_password", ask_pass=ask)


def test_connection_password_is_lazy_and_errors_name_host_and_variable(tree, monkeypatch):
    monkeypatch.delenv("FLEET_PW_UNSET", raising=False)
    root = tree(
        {
            "inv.yml": "all:\n  hosts:\n    pc-0009:\n",
            "group_vars/all.yml": "ansible_password: \"{{ lookup('env', 'FLEET_PW_UNSET') }}\"\n",
        }
    )
    host = Inventory.load(root / "inv.yml").host("pc-0009")
    conn = host.connection  # loading and listing never need the secret
    with pytest.raises(InputError) as err:
        conn.pypsrp_kwargs()
    assert "host pc-0009, variable ansible_password" in err.value.render()
    monkeypatch.setenv("FLEET_PW_UNSET", "now-set-789")
    assert host.connection.pypsrp_kwargs()["password"] == "now-set-789"


def test_ask_pass_supplies_the_winrm_password_when_the_inventory_has_none(tree):
    root = tree({"inv.yml": "all:\n  hosts:\n    pc-1:\n    pc-2:\n"})
    asked: list[str] = []
    ask = AskPass(lambda q: asked.append(q) or "typed-winrm")
    inv = Inventory.load(root / "inv.yml", ask_pass=ask)
    assert [h.connection.pypsrp_kwargs()["password"] for h in inv.hosts] == ["typed-winrm"] * 2
    assert len(asked) == 1


def test_an_all_digit_password_is_text_and_a_list_is_refused(tree):
    root = tree(
        {
            "inv.yml": "all:\n  hosts:\n    a:\n      ansible_password: 123456\n    b:\n      ansible_password: [x]\n"
        }
    )
    inv = Inventory.load(root / "inv.yml")
    assert inv.host("a").connection.pypsrp_kwargs()["password"] == "123456"
    with pytest.raises(InputError, match="ansible_password must be a string"):
        inv.host("b").connection.pypsrp_kwargs()


def test_ask_pass_may_be_a_plain_prompt_function(tree):
    root = tree({"inv.yml": "all:\n  hosts:\n    pc-1:\n"})
    inv = Inventory.load(root / "inv.yml", ask_pass=lambda question: "from-function")
    assert inv.host("pc-1").connection.pypsrp_kwargs()["password"] == "from-function"
    assert (
        resolve(None, host="pc-1", variable="x_password", ask_pass=lambda q: "f2").reveal() == "f2"
    )
