"""Named situations for a simulated fleet: every problem cpuu-fleet must report, on purpose.

Why: a lab is only useful if an operator (or a test) can say "give me 200 workstations, a realistic
mix of trouble" and get the same fleet again tomorrow. Everything here is drawn from a
``random.Random(seed)``, so a scenario and a seed fully decide the fleet: names, users, profiles,
facts and transport faults.

A scenario touches either the transport (:class:`TransportFaults`, honoured by the protocol layer)
or the workstation model (users, profiles, processes, disk, CPUU's behaviour), never both at once,
so each one shows exactly one problem.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cpuu_fleet.lab.contract import TransportFaults
from cpuu_fleet.lab.workstation import OutlookProfile, Workstation

MIB = 1024**2
GIB = 1024**3

SCENARIOS: dict[str, str] = {
    "healthy": "users logged on, Outlook closed, switched mailboxes: Update succeeds",
    "unreachable": "nothing listens on the host's address (powered off, firewalled)",
    "wrong_password": "WinRM refuses the fleet's credentials (HTTP 401)",
    "slow_link": "every WinRM answer is delayed, as over a slow WAN link",
    "drop_mid_transfer": "the connection drops once while the payload is being pushed",
    "disk_full": "the system drive has too little free space for the payload",
    "no_user": "nobody is logged on: CPUU cannot run in a user session now",
    "outlook_running": "the user has Outlook open (CPUU closes it)",
    "ost_locked": "Windows Search holds the OST files open: mailbox store cannot be opened",
    "offline_profiles": "profiles set to work offline: skipped unless -ProcessOfflineProfiles On",
    "not_switched": "the mailboxes are not switched yet: no switch message",
    "cpuu_crash": "CPUU crashes part-way and writes no result file",
    "cpuu_hang": "CPUU never finishes: the run must time out and kill it",
    "mixed_results": "several profiles per user, each with a different outcome",
    "lying_length": "the download sends more bytes than its header announced, without end",
    "endless_output": "the download sends warning records without end",
    "huge_log": "CPUU's log is larger than a collected file may be (80 MiB)",
    "huge_results": "CPUU's result file has 200,000 lines, more than a result file may have",
    "secret_in_log": "CPUU's log quotes CPUU.ini, passwords included, in UTF-8, UTF-16LE,"
    " UTF-16BE or cp1252 (by host number)",
    "hostile_text": "the user name and an error message carry ESC, C1 and right-to-left characters",
    "mixed": "a realistic fleet: mostly healthy, a few of each problem above but the hostile ones",
    "constrained_language": "AppLocker/WDAC script enforcement: PowerShell runs in"
    " ConstrainedLanguage mode, where the scripts' .NET calls are refused",
    "locked_log": "an AV scanner holds CPUU's log open exclusively: it cannot be read for now",
    "late_start": "the scheduled task comes up 1 to 3 s after Start-ScheduledTask returns",
    "entra_user": "the user is an Entra ID account (AzureAD\\Name), which Task Scheduler cannot map",
    "hostile_local_user": "a local user created the staging folder first and planted a DLL in it",
    "shell_starting": "an Entra ID user whose session is still starting: no explorer.exe yet to"
    " read the SID from, and a name Windows cannot translate",
    "console_closed": "the user closes the console window the run's batch file opens, while"
    " CPUU is still working",
    "audit_mix": "several users per host: the logged-on one (a profile with two Exchange accounts,"
    " a cached one or an OST larger than the free disk), one away with a loadable hive, one away"
    " whose hive another process holds",
    "new_outlook": "the logged-on user works in New Outlook: no MAPI profile for CPUU to switch",
}

HOSTILE_SCENARIOS = frozenset(
    {"lying_length", "endless_output", "huge_log", "huge_results", "secret_in_log", "hostile_text"}
)
"""A workstation that attacks the controller (or leaks a secret): never part of ``mixed``, whose
counts the demo and its tests rely on; asked for by name."""

WINDOWS_SCENARIOS = frozenset({"late_start", "entra_user"})
"""Documented Windows behaviours that an older run-task got wrong (issue 15)."""
AUDIT_SCENARIOS = frozenset({"audit_mix", "new_outlook"})
"""Profile shapes the read-only audit must see (issue 10): asked for by name."""
LATER_SCENARIOS = (
    frozenset(
        {
            "constrained_language",
            "locked_log",
            "hostile_local_user",
            "shell_starting",
            "console_closed",
        }
    )
    | WINDOWS_SCENARIOS
    | AUDIT_SCENARIOS
)
"""Windows behaviours added after ``mixed`` was fixed (issue 15): asked for by name, never part of
``mixed``, whose counts the demo and its tests rely on."""

HOSTILE_USER = "CORP\\ev\x1b[2J\x9b31m\u202eil\u2066"
"""A user name with an ESC sequence (clear screen), a C1 CSI, a right-to-left override and a
left-to-right isolate: none may reach a terminal, a log line or a CSV cell live."""
HOSTILE_ERROR = (
    "Access to the path 'C:\\Users\\ev\x1b[2J\x9b31m\u202eil' is denied.\x1b[32m succeeded"
    "\x1b[0m \u202etxt.exe"
)
"""A remote error message dressed up to repaint the operator's terminal."""

_FIRST = ("Jean", "Marie", "Luc", "Chloé", "Ahmed", "Sofia", "Pieter", "Ana", "Kenji", "Zoë")
_LAST = ("Dupont", "Martin", "Bernard", "Müller", "Garcia", "Rossi", "Nowak", "Silva", "Sato")
_EXTRA_PROFILES = (
    "Outlook 2016",
    "Archive «2019»",
    'José\'s "main" profile',
    "Boîte partagée",
    "Außendienst",
    "Projet Ω",
)
HOSTILE_PROFILE = '\'; Remove-Item C:\\ -Recurse -Force; $(Stop-Computer) # "x"'
"""A profile name that would do damage if any script interpolated it into code."""


@dataclass
class HostPlan:
    """One simulated workstation of a fleet, and how its network misbehaves."""

    name: str
    scenario: str
    workstation: Workstation
    faults: TransportFaults

    @property
    def user(self) -> str | None:
        return self.workstation.interactive_user


def plan_fleet(
    hosts: int,
    scenario: str,
    seed: int,
    root: Path,
    *,
    clock: Callable[[], float] = time.time,
) -> list[HostPlan]:
    """Build ``hosts`` workstations (``pc-0001``...) for ``scenario``, deterministically from
    ``seed``, each with its own sandbox folder under ``root``. ``clock`` is the workstations'
    clock (tests pass a fake one so that simulated CPUU runs cost no real time)."""
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario {scenario!r} (valid: {', '.join(sorted(SCENARIOS))})")
    if hosts < 1:
        raise ValueError(f"a fleet needs at least one host, not {hosts}")
    rng = random.Random(f"{scenario}:{seed}")
    names = [f"pc-{index:04d}" for index in range(1, hosts + 1)]
    chosen = _mixed_assignment(hosts, rng) if scenario == "mixed" else [scenario] * hosts
    plans = []
    for index, (name, host_scenario) in enumerate(zip(names, chosen, strict=True)):
        host_rng = random.Random(f"{scenario}:{seed}:{index}")
        workstation = _base_workstation(name, Path(root) / name, host_rng, clock)
        faults = _BUILDERS[host_scenario](workstation, host_rng)
        plans.append(HostPlan(name, host_scenario, workstation, faults))
    return plans


def _mixed_assignment(hosts: int, rng: random.Random) -> list[str]:
    """About 70 % healthy; the rest cycles through every problem so that each one shows up as soon
    as the fleet is large enough, then the order is shuffled."""
    left_out = ("healthy", "mixed", *HOSTILE_SCENARIOS, *LATER_SCENARIOS)
    problems = [name for name in SCENARIOS if name not in left_out]
    troubled = max(1, round(hosts * 0.3)) if hosts > 1 else 0
    rng.shuffle(problems)
    assignment = [problems[i % len(problems)] for i in range(troubled)]
    assignment += ["healthy"] * (hosts - troubled)
    rng.shuffle(assignment)
    return assignment


def _user_name(rng: random.Random) -> str:
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    plain = (first[0] + last).lower().translate(str.maketrans("éëöüß", "eeous"))
    return f"CORP\\{plain}"


def _base_workstation(
    name: str, root: Path, rng: random.Random, clock: Callable[[], float]
) -> Workstation:
    """A healthy workstation: a logged-on user with one to three switched, online profiles."""
    win11 = rng.random() < 0.3
    ws = Workstation(
        name,
        root,
        os_caption=f"Microsoft Windows {'11' if win11 else '10'} Enterprise",
        os_version="10.0.22631" if win11 else "10.0.19045",
        capacity_bytes=256 * GIB,
        reserved_bytes=rng.randint(60, 180) * GIB,
        outlook_version="15.0" if rng.random() < 0.1 else "16.0",
        clock=clock,
    )
    user = _user_name(rng)
    mailbox = user.split("\\")[1] + "@corp.example"
    ws.add_profile(user, OutlookProfile("Outlook", mailbox, ost_size=rng.randint(1, 8) * GIB))
    for extra in rng.sample(_EXTRA_PROFILES, rng.choice((0, 0, 1, 2))):
        ws.add_profile(user, OutlookProfile(extra, mailbox, ost_size=rng.randint(0, 2) * GIB))
    ws.logon(user)
    return ws


def _user_profiles(ws: Workstation) -> list[OutlookProfile]:
    user = ws.interactive_user
    assert user is not None
    return ws.profiles_of(user)


def _healthy(ws: Workstation, rng: random.Random) -> TransportFaults:
    return TransportFaults()


def _unreachable(ws: Workstation, rng: random.Random) -> TransportFaults:
    return TransportFaults(listening=False)


def _wrong_password(ws: Workstation, rng: random.Random) -> TransportFaults:
    # Not a secret: any value other than the fleet's lab password plays "wrong password".
    return TransportFaults(password=f"lab-other-{rng.randrange(10**6):06d}")


def _slow_link(ws: Workstation, rng: random.Random) -> TransportFaults:
    return TransportFaults(latency_s=round(rng.uniform(0.15, 0.4), 3))


def _drop_mid_transfer(ws: Workstation, rng: random.Random) -> TransportFaults:
    return TransportFaults(drop_after_send_bytes=rng.randint(32, 256) * 1024)


def _disk_full(ws: Workstation, rng: random.Random) -> TransportFaults:
    free = rng.randint(64, 512) * 1024
    ws.fs.reserved_bytes = ws.fs.capacity_bytes - ws.fs.used_bytes + ws.fs.reserved_bytes - free
    return TransportFaults()


def _no_user(ws: Workstation, rng: random.Random) -> TransportFaults:
    ws.logoff()
    return TransportFaults()


def _outlook_running(ws: Workstation, rng: random.Random) -> TransportFaults:
    ws.start_process("OUTLOOK", ws.interactive_user)
    return TransportFaults()


def _ost_locked(ws: Workstation, rng: random.Random) -> TransportFaults:
    for profile in _user_profiles(ws):
        profile.ost_size = profile.ost_size or GIB
    ws.start_process("SearchIndexer", "NT AUTHORITY\\SYSTEM", locks_ost=True)
    return TransportFaults()


def _offline_profiles(ws: Workstation, rng: random.Random) -> TransportFaults:
    for profile in _user_profiles(ws):
        profile.online = False
    return TransportFaults()


def _not_switched(ws: Workstation, rng: random.Random) -> TransportFaults:
    for profile in _user_profiles(ws):
        profile.mailbox_switched = False
    return TransportFaults()


def _cpuu_crash(ws: Workstation, rng: random.Random) -> TransportFaults:
    ws.cpuu.crash_after_profiles = rng.randrange(len(_user_profiles(ws)))
    return TransportFaults()


def _cpuu_hang(ws: Workstation, rng: random.Random) -> TransportFaults:
    ws.cpuu.hang = True
    return TransportFaults()


def _mixed_results(ws: Workstation, rng: random.Random) -> TransportFaults:
    """The user has five profiles: one updates, the others each stop for another reason."""
    user = ws.interactive_user
    assert user is not None
    mailbox = user.split("\\")[1] + "@corp.example"
    odd: list[tuple[str, dict]] = [
        ("Archive «2019»", {"unexpected_services": ("Skype for Business AB",)}),
        ('José\'s "main" profile', {"online": False}),
        ("Boîte partagée", {"mailbox_switched": False}),
        ("Projet Ω", {"auth_type": "Anonymous"}),
        (HOSTILE_PROFILE, {"update_fails": True}),
    ]
    profiles = ws.profiles_of(user)
    del profiles[1:]
    for name, facts in odd:
        ws.add_profile(user, OutlookProfile(name, mailbox, **facts))
    return TransportFaults()


def _lying_length(ws: Workstation, rng: random.Random) -> TransportFaults:
    ws.scripts.download_overrun = True
    return TransportFaults()


def _endless_output(ws: Workstation, rng: random.Random) -> TransportFaults:
    ws.scripts.download_endless_warnings = 0.0
    return TransportFaults()


def _huge_log(ws: Workstation, rng: random.Random) -> TransportFaults:
    ws.cpuu.log_padding_bytes = 80 * MIB
    return TransportFaults()


def _huge_results(ws: Workstation, rng: random.Random) -> TransportFaults:
    ws.cpuu.extra_result_rows = 200_000
    return TransportFaults()


_LOG_ENCODINGS = ("utf-8-bom", "utf-16le-bom", "utf-16be-bom", "cp1252")


def _secret_in_log(ws: Workstation, rng: random.Random) -> TransportFaults:
    ws.cpuu.log_quotes_ini = True
    # By host number (pc-0001 → UTF-8), so that a fleet of four shows every encoding.
    number = int(ws.name.rsplit("-", 1)[-1]) if ws.name.rsplit("-", 1)[-1].isdigit() else 1
    ws.cpuu.log_encoding = _LOG_ENCODINGS[(number - 1) % len(_LOG_ENCODINGS)]
    return TransportFaults()


def _hostile_text(ws: Workstation, rng: random.Random) -> TransportFaults:
    ws.logoff()
    ws.add_profile(HOSTILE_USER, OutlookProfile("Outlook", "evil@corp.example"))
    ws.logon(HOSTILE_USER)
    ws.scripts.download_error = HOSTILE_ERROR
    return TransportFaults()


def _constrained_language(ws: Workstation, rng: random.Random) -> TransportFaults:
    ws.language_mode = "ConstrainedLanguage"
    return TransportFaults()


def _locked_log(ws: Workstation, rng: random.Random) -> TransportFaults:
    ws.hold_file("C:\\ProgramData\\cpuu-fleet\\*\\CPUU_*.log", by="MsMpEng")
    return TransportFaults()


def _late_start(ws: Workstation, rng: random.Random) -> TransportFaults:
    ws.task_start_delay_s = rng.uniform(1.0, 3.0)
    return TransportFaults()


def _entra_user(ws: Workstation, rng: random.Random) -> TransportFaults:
    """The same person, signed in with an Entra ID account: Win32_ComputerSystem.UserName is
    ``AzureAD\\FirstLast`` and only the SID (``S-1-12-1-...``) can name them to Task Scheduler."""
    old = ws.interactive_user
    assert old is not None
    ws.logoff()
    user = "AzureAD\\" + old.split("\\", 1)[1].capitalize()
    for profile in ws.profiles_of(old):
        ws.add_profile(user, profile)
    ws.profiles[old] = []
    ws.usual_user = None
    ws.logon(user)
    return TransportFaults()


STAGING_ROOT = "C:\\ProgramData\\cpuu-fleet"
INTRUDER = "intruder"
"""The local account that plants files (``<HOST>\\intruder``): not the user CPUU runs for."""


def _hostile_local_user(ws: Workstation, rng: random.Random) -> TransportFaults:
    """ProgramData lets every user create folders: a local user made the staging root before
    cpuu-fleet did (so owns it) and put a DLL where CPUU would load it in the next user's
    session (DLL search order starts with the program's folder)."""
    intruder = f"{ws.name.upper()}\\{INTRUDER}"
    ws.user_writes(intruder, STAGING_ROOT)
    ws.user_writes(intruder, STAGING_ROOT + "\\version.dll", b"MZ planted by a local user")
    return TransportFaults()


def _shell_starting(ws: Workstation, rng: random.Random) -> TransportFaults:
    """The Entra ID user of ``entra_user``, caught before explorer.exe has started."""
    _entra_user(ws, rng)
    ws.shell_running = False
    return TransportFaults()


def _console_closed(ws: Workstation, rng: random.Random) -> TransportFaults:
    """CPUU takes a while here, and the user closes the window half-way through."""
    ws.cpuu.base_seconds = 2.0
    ws.closes_console_after_s = 0.5
    return TransportFaults()


AWAY_PREFIX = "away."
"""A user with a profile on this host who is not logged on (their hive can be loaded)."""
HELD_PREFIX = "held."
"""A user who is not logged on and whose NTUSER.DAT another process holds."""
HIVE_HOLDER = "BackupAgent"
TEAM_MAILBOX = "team@corp.example"


def _audit_mix(ws: Workstation, rng: random.Random) -> TransportFaults:
    """Every user with a profile here, not only the one logged on, and the shapes CPUU trips on:
    a second Exchange account, a cached ("offline") profile, an OST larger than the free disk."""
    user = ws.interactive_user
    assert user is not None
    name = user.split("\\")[1]
    profiles = ws.profiles_of(user)
    profiles[0].extra_mailboxes = (TEAM_MAILBOX,)
    shape = rng.choice(("cached", "big_ost", "plain"))
    if shape == "cached":
        ws.add_profile(
            user, OutlookProfile("Cached", profiles[0].mailbox, online=False, ost_size=GIB)
        )
    elif shape == "big_ost":
        free = 3 * GIB
        ws.fs.reserved_bytes = ws.fs.capacity_bytes - ws.fs.used_bytes + ws.fs.reserved_bytes - free
        for profile in profiles:
            profile.ost_size = min(profile.ost_size, GIB)
        ws.add_profile(user, OutlookProfile("Archive", profiles[0].mailbox, ost_size=20 * GIB))
    ws.mail.hive(user).default_profile = profiles[-1].name
    away = f"CORP\\{AWAY_PREFIX}{name}"
    ws.add_profile(
        away, OutlookProfile("Outlook", f"{AWAY_PREFIX}{name}@corp.example", ost_size=GIB)
    )
    held = f"CORP\\{HELD_PREFIX}{name}"
    ws.add_profile(held, OutlookProfile("Outlook", f"{HELD_PREFIX}{name}@corp.example"))
    ws.mail.hive(held).held_by = HIVE_HOLDER
    return TransportFaults()


def _new_outlook(ws: Workstation, rng: random.Random) -> TransportFaults:
    user = ws.interactive_user
    assert user is not None
    ws.mail.hive(user).new_outlook = True
    return TransportFaults()


_BUILDERS: dict[str, Callable[[Workstation, random.Random], TransportFaults]] = {
    "healthy": _healthy,
    "unreachable": _unreachable,
    "wrong_password": _wrong_password,
    "slow_link": _slow_link,
    "drop_mid_transfer": _drop_mid_transfer,
    "disk_full": _disk_full,
    "no_user": _no_user,
    "outlook_running": _outlook_running,
    "ost_locked": _ost_locked,
    "offline_profiles": _offline_profiles,
    "not_switched": _not_switched,
    "cpuu_crash": _cpuu_crash,
    "cpuu_hang": _cpuu_hang,
    "mixed_results": _mixed_results,
    "lying_length": _lying_length,
    "endless_output": _endless_output,
    "huge_log": _huge_log,
    "huge_results": _huge_results,
    "secret_in_log": _secret_in_log,
    "hostile_text": _hostile_text,
    "constrained_language": _constrained_language,
    "locked_log": _locked_log,
    "late_start": _late_start,
    "entra_user": _entra_user,
    "shell_starting": _shell_starting,
    "console_closed": _console_closed,
    "hostile_local_user": _hostile_local_user,
    "audit_mix": _audit_mix,
    "new_outlook": _new_outlook,
}
assert set(_BUILDERS) | {"mixed"} == set(SCENARIOS)
