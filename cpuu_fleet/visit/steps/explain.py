"""What a remote error means to an operator: one table for every step and script.

A host's language mode (any script may meet it; preflight checks it first), a staging folder
cpuu-fleet refuses to use, a logged-on user Task Scheduler cannot be told about yet: the
scripts' error ids are their contract, and ``explain`` turns each into what it means and what
to do. Its own module because the per-host pipeline (``host_visit.py``) applies it to every
step's error, whichever step raised it.
"""

from __future__ import annotations

from cpuu_fleet.visit.session import SessionError
from cpuu_fleet.vocabulary import ErrorClass

LANGUAGE_MODE_ERRORS = frozenset(
    {
        "ConstrainedLanguage",  # preflight's own check
        "MethodInvocationNotSupportedInConstrainedLanguage",  # a script that got past it
        "PropertyReferenceNotSupportedInDataSection",  # RestrictedLanguage refuses the check
        "VariableReferenceNotSupportedInDataSection",
        "ScriptsNotAllowed",  # NoLanguage
    }
)
"""Error ids that mean "this host's PowerShell is not in FullLanguage" (about_Language_Modes)."""

LANGUAGE_MODE_HELP = (
    "PowerShell on this host does not run in FullLanguage mode (ConstrainedLanguage: AppLocker"
    " or WDAC script enforcement), where the .NET calls of cpuu-fleet's scripts are refused;"
    " nothing was changed on the host. Microsoft documents FullLanguage under such a policy only"
    " for scripts the policy trusts, and cpuu-fleet sends its scripts as text over WinRM, which no"
    " allow rule or signature can cover. To include this host, have the policy owner exempt it"
    " (or the fleet account's WinRM sessions) for the wave, or set"
    " ansible_psrp_configuration_name to a session configuration whose sessions the policy lets"
    " run in FullLanguage."
)


UNTRUSTED_STAGING_HELP = (
    "the host's staging folder was created by an account other than SYSTEM or Administrators"
    " (a local user may have placed files in it to run in another user's session): nothing was"
    " pushed to or run from it. Have an administrator inspect and delete it, then run again"
)


UNMAPPED_USER_HELP = (
    "the logged-on user's account cannot be translated to a SID and no explorer.exe of theirs"
    " runs yet to read it from (a session still starting, an Entra ID or deleted account):"
    " nothing was started; retried later in the wave, then by --retry-failed"
)


def explain(error: SessionError) -> SessionError:
    """A remote error an operator can act on, said as what it means and what to do.

    One table for every step and script (the scripts' error ids are their contract): the host's
    language mode (any script may meet it; preflight checks it first), a staging folder we
    refuse to use (upload and run-task check it) and a logged-on user run-task cannot name to
    Task Scheduler yet. Any other error is returned unchanged.
    """
    transient = False
    if error.error_id == "UntrustedStaging":
        error_class, help_text, error_id = ErrorClass.POLICY, UNTRUSTED_STAGING_HELP, error.error_id
    elif error.error_id == "UnmappedUser":
        error_class, help_text, error_id = ErrorClass.REMOTE, UNMAPPED_USER_HELP, error.error_id
        transient = True  # the shell comes up within seconds of a logon
    elif error.error_id in LANGUAGE_MODE_ERRORS:
        error_class, help_text, error_id = (
            ErrorClass.REMOTE,
            LANGUAGE_MODE_HELP,
            "ConstrainedLanguage",
        )
    else:
        return error
    return SessionError(
        error_class, f"{help_text} ({error.message})", transient=transient, error_id=error_id
    )
