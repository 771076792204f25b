"""The exit codes of every ``myinvois-connector`` command: the contract with the scripts,
schedulers and monitoring that run it.

They are documented in docs/operations.md ("Exit codes"); a test checks that table against
this one. When several apply, a run exits with the most severe: the numerically highest of
those below 64, so a script can test ``-ge`` as well as ``-eq``. 1 is left to Python itself
(an unexpected error, printed with its traceback) and 2 to a configuration that cannot be used
(click also exits 2 on a command-line usage error: both mean "fix the invocation").
"""

from __future__ import annotations

from enum import IntEnum


class ExitCode(IntEnum):
    #: Every fetched invoice is final and its outcome written back; none needs the ERP's attention.
    OK = 0
    #: An unexpected error (a bug): Python's own code, with a traceback.
    UNEXPECTED = 1
    #: The configuration cannot be used: a missing or malformed setting, a broken plugin, a
    #: migration that could not run. Nothing was sent.
    CONFIG = 2
    #: Every invoice is final, but some need the ERP's attention: invalid at MyInvois or
    #: locally, a number conflict, changed after validation, or in an escalated submission.
    NEEDS_ATTENTION = 3
    #: An ERP source could not be read or written back (unreachable, refused, broken query).
    SOURCE_UNAVAILABLE = 4
    #: MyInvois could not be reached, or refused a profile's login.
    MYINVOIS_UNAVAILABLE = 5
    #: ``run --once`` gave up waiting (``cycles.once_timeout_seconds``) with invoices unfinished.
    GAVE_UP = 6
    #: A command for one invoice (``show``, ``history``, ``retry``, ``cancel``) found no invoice
    #: with that number or source key in the ledger.
    UNKNOWN_INVOICE = 7
    #: A command for one invoice refused to act on it in its state: ``retry`` of an invoice
    #: refused for its content (correct the ERP record instead) or still valid or in flight.
    #: The message says why and what to do.
    REFUSED = 8


def most_severe(*codes: ExitCode) -> ExitCode:
    """The code a run exits with when several apply."""
    return max(codes, default=ExitCode.OK)
