"""Where each user's Outlook profiles point, as the lab models it: what ``audit`` reads.

Why here and not beside the emulator's model: there is ONE model of a user's profiles, the
workstation's ``profiles`` (``OutlookProfile``, edited by the CPUU emulator). This module only adds
what the emulator never needed and the audit reads: the two Exchange servers of the migration,
and per user the facts of their registry hive (loaded because they are logged on, on disk and
loadable, or held by another process; New Outlook in use; the default profile). Where a profile
points is *derived* from its state, so an audit after a wave sees exactly what the emulator did:
a profile CPUU updated points to the target, one it rolled back to the source again.

Lab conventions (the vendor and Microsoft are silent on what a real host's values look like, and
the audit's controller side never relies on them: it classifies by the inventory's patterns):
* every Exchange account of a profile moves with the profile (CPUU switches the profile);
* a cached-mode profile is what CPUU calls an "offline" profile (code 6 unless
  ``-ProcessOfflineProfiles On``): the emulator's ``online = False``;
* the OST file lives at ``C:\\Users\\<name>\\AppData\\Local\\Microsoft\\Outlook\\<mailbox> -
  <profile>.ost`` and has the profile's ``ost_size``; CPUU's backup copy shares its original's OST.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field

from cpuu_fleet.lab.workstation import OutlookProfile, ProfileState, Workstation

SOURCE_SERVER = "exch2016.source.example"
"""The lab's source Exchange server (the inventory's ``cpuu_source_servers`` matches it)."""
TARGET_SERVER = "outlook.target.example"
"""The lab's target Exchange server (``cpuu_target_servers``)."""


class HiveState(str, enum.Enum):
    """How the audit reaches a user's registry hive (the script's ``HiveState``)."""

    LOADED = "Loaded"
    """The user is logged on: the hive is under HKEY_USERS already."""
    COPIED = "Copied"
    """Not logged on: NTUSER.DAT is on disk and nobody holds it, so the audit reads a copy."""
    LOCKED = "Locked"
    """Not logged on, but another process holds NTUSER.DAT: the audit cannot read it now."""


@dataclass
class UserHive:
    """The facts of one user's hive that the emulator never needed."""

    new_outlook: bool = False
    """The user switched to New Outlook, which has no MAPI profile for CPUU to switch."""
    held_by: str | None = None
    """A process (a backup agent, a profile tool) holds NTUSER.DAT while the user is away."""
    default_profile: str | None = None
    """The profile Outlook opens (``DefaultProfile``); None: the user's first profile."""


@dataclass
class MailSetup:
    """One workstation's migration facts beyond its profiles."""

    source_server: str = SOURCE_SERVER
    target_server: str = TARGET_SERVER
    hives: dict[str, UserHive] = field(default_factory=dict)

    def hive(self, user: str) -> UserHive:
        """The user's hive facts (created with defaults on first use; names ignore case)."""
        return self.hives.setdefault(user.casefold(), UserHive())


def server_of(setup: MailSetup, profile: OutlookProfile) -> str:
    """The server the profile's Exchange accounts point to, from the emulator's state."""
    if profile.state in (ProfileState.UPDATED, ProfileState.CLEANED):
        return setup.target_server
    return setup.source_server  # never switched, rolled back, or CPUU's backup of the original


def mailboxes_of(profile: OutlookProfile) -> tuple[str, ...]:
    """Every Exchange account of the profile, the primary one first."""
    return (profile.mailbox, *profile.extra_mailboxes)


def ost_path(user: str, profile: OutlookProfile) -> str | None:
    """Where the profile's OST lives (None: online mode without one), by the lab's convention."""
    if not profile.ost_size:
        return None
    name = user.split("\\")[-1]
    original = profile.backup_of or profile.name
    return (
        f"C:\\Users\\{name}\\AppData\\Local\\Microsoft\\Outlook\\{profile.mailbox} - {original}.ost"
    )


def hive_state(ws: Workstation, user: str) -> HiveState:
    """How an audit meets this user's hive right now: loaded while they have a session (the
    console's or a Remote Desktop one; Win32_UserProfile.Loaded)."""
    if ws.session_user(user) is not None:
        return HiveState.LOADED
    if ws.mail.hive(user).held_by is not None:
        return HiveState.LOCKED
    return HiveState.COPIED


def is_default(ws: Workstation, user: str, profile: OutlookProfile) -> bool:
    """Is this the profile Outlook opens for the user?"""
    chosen = ws.mail.hive(user).default_profile
    profiles = ws.profiles_of(user)
    if chosen is None:
        return bool(profiles) and profiles[0] is profile
    return profile.name == chosen


def users_with_hives(ws: Workstation) -> list[str]:
    """Every user with a profile folder (and so a hive) here: those the emulator knows, in order."""
    return list(ws.profiles)
