"""Batch files and device maps as the consoles export them, and hostile ones refused."""

from __future__ import annotations

import pytest

from cpuu_fleet import vocabulary as V
from cpuu_fleet.errors import InputError
from cpuu_fleet.inputs import mailboxes as M
from cpuu_fleet.inputs.mailboxes import (
    host_key,
    load_mailboxes,
    parse_columns,
    read_batch,
    read_devices,
    user_key,
)


def _write(path, text: str, encoding: str = "utf-8"):
    path.write_bytes(text.encode(encoding))
    return path


def test_exchange_migration_batch_csv(tmp_path):
    """Exchange's batch CSV has only EmailAddress: the batch is the file's name."""
    path = _write(
        tmp_path / "Wave-3.csv", "EmailAddress\r\njdupont@corp.example\r\nZoë@corp.example\r\n"
    )
    rows = read_batch(path)
    assert [(m.mailbox, m.batch, m.key, m.line) for m in rows] == [
        ("jdupont@corp.example", "Wave-3", "jdupont", 2),
        ("Zoë@corp.example", "Wave-3", "zoë", 3),
    ]


def test_get_migrationuser_export_semicolons_utf16(tmp_path):
    """PowerShell 5: Get-MigrationUser | Export-Csv -Delimiter ';' -Encoding Unicode."""
    text = (
        "#TYPE Microsoft.Exchange.Migration.MigrationUser\r\n"
        '"Identity";"BatchId";"Status"\r\n"jdupont@corp.example";"Finance";"Synced"\r\n'
    )
    path = _write(tmp_path / "users.csv", "\ufeff" + text, "utf-16-le")
    (row,) = read_batch(path)
    assert (row.mailbox, row.batch, row.key) == ("jdupont@corp.example", "Finance", "jdupont")
    assert row.line == 3  # the #TYPE line counts


def test_named_columns_and_a_user_column_win(tmp_path):
    """A French export: its own headers, named with --mailbox-column; the User column is the key."""
    path = _write(
        tmp_path / "lot.csv",
        "Courriel;Compte;Lot;Bascule prévue\nj.dupont@corp.example;CORP\\JDupont;Lot 1;12/12/2026\n",
        "cp1252",
    )
    columns = parse_columns(
        ["mailbox=Courriel", "user=Compte", "batch=Lot", "switch_date=Bascule prévue"]
    )
    (row,) = read_batch(path, columns=columns)
    assert (row.user, row.key, row.batch, row.switch_date) == (
        "CORP\\JDupont", "jdupont", "Lot 1", "12/12/2026",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("header", "row"),
    [
        ("ResourceName,UniqueUserName,IsActive", "PC-0001.corp.example,CORP\\jdupont,1"),
        ("deviceName,userPrincipalName,operatingSystem", "pc-0001,JDupont@corp.example,Windows"),
    ],
    ids=["mecm-affinity", "intune-primary-users"],
)
def test_device_maps_of_mecm_and_intune(tmp_path, header, row):
    path = _write(tmp_path / "map.csv", f"{header}\n{row}\n{row}\n", "utf-8-sig")
    (link,) = read_devices(path)  # the same pair twice is one link
    assert (link.key, link.host_key) == ("jdupont", "pc-0001")


def test_keys_join_account_upn_and_host_names():
    assert user_key("CORP\\JDupont") == user_key("jdupont@corp.example") == "jdupont"
    assert host_key("PC-01.corp.example") == host_key("pc-01") == "pc-01"
    assert host_key("127.0.0.5") == "127.0.0.5"


def test_hostile_text_is_kept_as_data(tmp_path):
    """A formula or a control character is a (strange) mailbox, never acted on here."""
    path = _write(
        tmp_path / "b.csv", 'Mailbox\n"=HYPERLINK(""http://x"",""y"")"\nev\x1bil@corp.example\n'
    )
    assert [m.mailbox for m in read_batch(path)] == [
        '=HYPERLINK("http://x","y")',
        "ev\x1bil@corp.example",
    ]


@pytest.mark.parametrize(
    ("text", "line", "words"),
    [
        ("Name,Department\nx,y\n", 1, "no mailbox column"),
        ("EmailAddress\na@x\nA@x\n", 3, "listed twice (first on line 2)"),
        ("EmailAddress,Batch\na@x,B,extra\n", 2, "3 cells, the header has 2"),
        ("EmailAddress,Batch\n,B1\n", 2, "no mailbox on this row"),
        ('EmailAddress\n"a@x\n', 2, "not a readable CSV"),
        ("EmailAddress\n", None, "lists no mailbox"),
        ("", None, "empty"),
    ],
)
def test_bad_batch_files_name_file_and_line(tmp_path, text, line, words):
    path = _write(tmp_path / "bad.csv", text)
    with pytest.raises(InputError) as caught:
        read_batch(path)
    assert words in caught.value.message
    assert caught.value.where == str(path) and caught.value.line == line


def test_a_huge_file_is_refused_unread(tmp_path):
    """A 1 GB file (sparse: nothing is written) is refused by its size alone."""
    path = tmp_path / "huge.csv"
    with path.open("wb") as handle:
        handle.truncate(1024**3)
    with pytest.raises(InputError, match="at most 64 MiB") as caught:
        read_batch(path)
    assert caught.value.where == str(path)


def test_a_huge_row_and_too_many_rows_are_refused(tmp_path, monkeypatch):
    long_row = _write(tmp_path / "long.csv", "EmailAddress\na@x\n" + "b" * 200_000 + "@x\n")
    with pytest.raises(InputError, match="a line of 200,003 characters") as caught:
        read_batch(long_row)
    assert caught.value.line == 3
    long_cell = _write(tmp_path / "cell.csv", "EmailAddress\n" + "c" * 5000 + "@x\n")
    with pytest.raises(InputError, match="a mailbox of 5,002 characters"):
        read_batch(long_cell)
    monkeypatch.setattr(M, "MAX_ROWS", 3)
    many = _write(tmp_path / "many.csv", "EmailAddress\n" + "".join(f"u{i}@x\n" for i in range(5)))
    with pytest.raises(InputError, match="more than 3 rows") as caught:
        read_batch(many)
    assert caught.value.line == 5


def test_binary_file_and_bad_options_are_refused(tmp_path):
    binary = tmp_path / "b.xlsx"
    binary.write_bytes(b"PK\x03\x04\x00\x00\x01\x02\x00\xff\xfe\x00" * 10)
    with pytest.raises(InputError):
        read_batch(binary)
    with pytest.raises(InputError, match="ROLE=HEADER"):
        parse_columns(["colour=Blue"])
    with pytest.raises(InputError, match="no column 'Courriel' for the mailbox"):
        read_batch(
            _write(tmp_path / "x.csv", "EmailAddress\na@x\n"), columns={"mailbox": "Courriel"}
        )
    with pytest.raises(InputError, match="no device on this row") as caught:
        load_mailboxes(
            _write(tmp_path / "ok.csv", "EmailAddress\na@x\n"),
            _write(tmp_path / "map.csv", "ResourceName,UniqueUserName\n,CORP\\a\n"),
        )
    assert caught.value.where == str(tmp_path / "map.csv") and caught.value.line == 2


def test_every_host_state_has_a_mailbox_state():
    """The roll-up's order covers the whole vocabulary: a new host state must be placed in it."""
    assert set(V.USER_STATE_OF_HOST) == set(V.BY_KEY)
    assert set(V.USER_STATE_OF_HOST.values()) <= set(V.USER_STATES)
    assert V.USER_STATES[0] == V.USER_NEEDS_ACTION and V.USER_STATES[-1] == V.USER_DONE
