"""Sizes in the bounds on what a workstation may send: binary and decimal units."""

from __future__ import annotations

import pytest

from cpuu_fleet.limits import MIB, parse_size


def test_sizes_take_binary_and_decimal_units():
    assert parse_size(65536) == 65536
    assert parse_size("64 MiB") == 64 * MIB and parse_size("1GB") == 10**9
    with pytest.raises(ValueError):
        parse_size("0")
