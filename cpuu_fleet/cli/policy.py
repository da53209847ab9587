"""``play``'s batches and stop rules on the command line: ``--serial``, ``--max-fail-percentage``
and ``--max-unreachable-percentage``, overriding every play's own for one run.

Why here and not in the playbook alone: the right batches for a wave are rarely the right ones
for its follow-ups (a few stragglers, one site), and editing a reviewed playbook for one run is
how a typo reaches the whole fleet. The values are read with the playbook's own grammar
(:mod:`cpuu_fleet.inputs.playbook`), so ``--serial 1,10%,50%`` means what ``serial:`` means.
"""

from __future__ import annotations

from typing import Annotated, Any, Optional

import typer

from cpuu_fleet.inputs.playbook import (
    DEFAULT_MAX_UNREACHABLE_PERCENTAGE,
    parse_percentage_option,
    parse_serial_option,
)

SerialOption = Annotated[
    Optional[str],  # noqa: UP045 - typer reads this annotation at run time
    typer.Option(
        "--serial",
        metavar="N,N%,...",
        help="Batches for every play, as the playbook's 'serial' (e.g. 1,10%,50%; 0: one batch).",
    ),
]


def _percentage(flag: str, help_text: str) -> Any:
    """A threshold option: a string, read by the playbook's own rule (``20`` or ``20%``)."""
    return Annotated[
        Optional[str],  # noqa: UP045 - typer reads this annotation at run time
        typer.Option(flag, metavar="PCT", help=help_text),
    ]


MaxFailOption = _percentage(
    "--max-fail-percentage",
    "Stop when a batch's failed share of its reached hosts exceeds PCT (0-100).",
)
MaxUnreachableOption = _percentage(
    "--max-unreachable-percentage",
    "Stop when the play's unreachable hosts so far exceed PCT of its hosts"
    f" (0-100; default {DEFAULT_MAX_UNREACHABLE_PERCENTAGE:g}).",
)


def policy_fields(
    serial: str | None, max_fail: str | None, max_unreachable: str | None
) -> dict[str, Any]:
    """The ``PlayRequest`` fields the three options give (only those given)."""
    fields: dict[str, Any] = {}
    if serial is not None:
        fields["serial"] = parse_serial_option(serial)
    if max_fail is not None:
        fields["max_fail_percentage"] = parse_percentage_option(max_fail, "--max-fail-percentage")
    if max_unreachable is not None:
        fields["max_unreachable_percentage"] = parse_percentage_option(
            max_unreachable, "--max-unreachable-percentage"
        )
    return fields
