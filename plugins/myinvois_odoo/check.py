"""The Odoo plugin's ``check_source`` hook, for ``myinvois-connector doctor``.

Logs in, checks the field mapping, reads one pending invoice the way a cycle does (reads
only: nothing is marked queued) and asks Odoo whether the user may modify invoices, which
write-back needs.
"""

from __future__ import annotations

from connector_core import hookimpl
from connector_core.contract import Source, SourceCheck
from connector_core.model import Invoice
from myinvois_odoo.options import OdooSourceOptions
from myinvois_odoo.rpc import OdooCallError
from myinvois_odoo.source import OdooSource


@hookimpl
def check_source(source: Source) -> list[SourceCheck]:
    options = source.options
    assert isinstance(options, OdooSourceOptions), "the core hands an odoo source its OdooSourceOptions"
    odoo = OdooSource(source.name, options)
    try:
        uid = odoo.client.authenticate()
        findings = [
            SourceCheck.passed(
                f"logged in to Odoo {odoo.client.major_version or '?'} at {options.url}, database {options.database!r}, "
                f"as {options.login!r} (uid {uid})"
            )
        ]
        first = next(iter(odoo.pending(1)), None)  # checks the field mapping first, as a cycle does
        if first is None:
            read = "no posted invoice is pending"
        elif isinstance(first, Invoice):
            read = f"first pending invoice {first.number} reads"
        else:
            read = f"first pending record {first.source_key} is refused: {'; '.join(first.errors)[:300]}"
        findings.append(SourceCheck.passed(f"every mapped field exists; {read}"))
        findings.append(_write_right(odoo, options))
        return findings
    finally:
        odoo.client.close()


def _write_right(odoo: OdooSource, options: OdooSourceOptions) -> SourceCheck:
    try:
        allowed = odoo.client.execute("account.move", "check_access_rights", "write", raise_exception=False)
    except OdooCallError as exc:
        return SourceCheck.unknown(
            f"write-back: Odoo did not say whether {options.login!r} may modify invoices ({exc.odoo_message})"
        )
    if not allowed:
        return SourceCheck.failed(
            f"write-back: Odoo user {options.login!r} may not modify invoices (account.move); "
            "give the user the Accounting / Billing rights"
        )
    return SourceCheck.passed(f"write-back: Odoo user {options.login!r} may modify invoices")
