"""The conformance suite every ERP plugin runs: subclass :class:`PluginContract`.

A plugin's test module subclasses it once per ERP flavour and provides five fixtures:

* ``plugin_module``: the module registered under the ``myinvois_connector`` entry point;
* ``source``: a :class:`~connector_core.contract.Source` of the plugin's kind, on an empty ERP;
* ``seed_invoices``: ``seed_invoices(n)`` puts ``n`` well-formed pending invoices into the ERP
  and returns their source keys, oldest first;
* ``seed_bad_record``: ``seed_bad_record()`` puts one pending record with a mandatory field
  missing into the ERP and returns ``(source_key, field)``, where ``field`` is the name the
  ERP uses for what is missing (a column, an Odoo field), which the error must mention;
* ``read_back``: ``read_back(source_key)`` returns what the ERP now shows for the invoice as a
  :class:`ErpStatus`.

Hooks are called through a real pluggy manager holding only the project's hookspecs, with
keyword arguments, exactly as the connector calls them, so a signature that does not match the
contract fails here rather than in production.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from types import ModuleType

import pluggy
import pytest
from pydantic import BaseModel, ValidationError

from connector_core import hookspecs
from connector_core.contract import DocumentOutcome, DocumentState, Source
from connector_core.model import Invoice, RejectedRecord

DEMO_SUPPLIER = {
    "name": "Syarikat Demo Sdn. Bhd.",
    "tin": "C25845632020",
    "brn": "202001234567",
    "msic_code": "46510",
}
DEMO_BUYER = {"name": "Pelanggan Contoh Sdn. Bhd.", "tin": "C58101234560", "brn": "200501012345"}


@dataclass(frozen=True)
class ErpStatus:
    """The MyInvois status of one invoice as the ERP shows it after a write-back."""

    status: str | None
    uuid: str | None = None
    long_id: str | None = None
    validation_link: str | None = None
    errors: str | None = None
    #: After Valid: where the ERP shows the reason of a rejection request or cancellation.
    reason: str | None = None


def valid_outcome(invoice: Invoice, version: int = 1) -> DocumentOutcome:
    uuid = f"UUID{invoice.source_key:0>22}"[:26]
    return DocumentOutcome(
        source_key=invoice.source_key,
        number=invoice.number,
        version=version,
        state=DocumentState.VALID,
        uuid=uuid,
        long_id=f"LONG{invoice.source_key}X" * 3,
        submission_uid=f"SUB{invoice.source_key}",
        validation_link=f"https://preprod.myinvois.hasil.gov.my/{uuid}/share/LONG{invoice.source_key}",
        document_type=invoice.document_type.value,
        final_at=datetime(2026, 11, 24, 20, 0, tzinfo=UTC),
    )


def invalid_outcome(invoice: Invoice, version: int = 1) -> DocumentOutcome:
    return DocumentOutcome(
        source_key=invoice.source_key,
        number=invoice.number,
        version=version,
        state=DocumentState.INVALID,
        uuid=f"BADUUID{invoice.source_key}",
        errors=["The buyer's TIN C58101234560 is not registered with LHDN: check the buyer's TIN."],
        error_details=[{"code": "CF410", "target": "TIN"}],
        document_type=invoice.document_type.value,
        final_at=datetime(2026, 11, 24, 20, 5, tzinfo=UTC),
    )


class PluginContract:
    """Tests every ERP plugin must pass. Subclasses provide the fixtures named in the module doc."""

    @pytest.fixture()
    def plugin_module(self) -> ModuleType:
        raise NotImplementedError

    @pytest.fixture()
    def source(self) -> Source:
        raise NotImplementedError

    @pytest.fixture()
    def seed_invoices(self) -> Callable[[int], list[str]]:
        raise NotImplementedError

    @pytest.fixture()
    def seed_bad_record(self) -> Callable[[], tuple[str, str]]:
        raise NotImplementedError

    @pytest.fixture()
    def read_back(self) -> Callable[[str], ErpStatus]:
        raise NotImplementedError

    # --- helpers --------------------------------------------------------------------------

    @pytest.fixture()
    def hook(self, plugin_module):
        manager = pluggy.PluginManager(hookspecs.PROJECT_NAME)
        manager.add_hookspecs(hookspecs)
        manager.register(plugin_module)
        manager.check_pending()  # an implementation matching no spec (a typo) fails here
        return manager.hook

    @staticmethod
    def fetch(hook, source: Source, limit: int = 1000) -> list[Invoice | RejectedRecord]:
        results = hook.fetch_pending_invoices(source=source, limit=limit)
        assert len(results) == 1, "exactly the owning plugin answers for its source"
        records: Iterable[Invoice | RejectedRecord] = results[0]
        return list(records)

    # --- start-up -------------------------------------------------------------------------

    def test_registers_its_kind_with_options_that_forbid_unknown_keys(self, hook, source):
        registered: list[tuple[str, type[BaseModel], str]] = []

        def register(kind, options_model, *, description):
            registered.append((kind, options_model, description))

        hook.register_source_kinds(register=register)
        kinds = {kind: model for kind, model, _ in registered}
        assert source.kind in kinds
        model = kinds[source.kind]
        assert isinstance(source.options, model)
        assert model.model_config.get("extra") == "forbid"
        assert all(description.strip() for _, _, description in registered)
        settings = source.options.model_dump(exclude_defaults=True)
        with pytest.raises(ValidationError) as error:
            model.model_validate({**settings, "no_such_setting": 1})
        assert "no_such_setting" in str(error.value)

    # --- fetch ----------------------------------------------------------------------------

    def test_fetch_yields_canonical_invoices_oldest_first(self, hook, source, seed_invoices):
        keys = seed_invoices(3)
        fetched = self.fetch(hook, source)
        assert [record.source_key for record in fetched] == keys
        for invoice in fetched:
            assert isinstance(invoice, Invoice), getattr(invoice, "errors", invoice)
            # What the plugin built must survive the canonical model's own validation again.
            again = Invoice.model_validate(invoice.model_dump(exclude_computed_fields=True))
            assert again.fingerprint() == invoice.fingerprint()
            assert invoice.supplier.tin == DEMO_SUPPLIER["tin"] or invoice.buyer.tin == DEMO_SUPPLIER["tin"]
            assert invoice.lines and invoice.payable_amount > 0
        # Fetching again without recording gives the same content: no spurious new versions.
        assert [i.fingerprint() for i in self.fetch(hook, source)] == [i.fingerprint() for i in fetched]

    def test_fetch_respects_limit(self, hook, source, seed_invoices):
        keys = seed_invoices(5)
        fetched = self.fetch(hook, source, limit=2)
        assert [record.source_key for record in fetched] == keys[:2]

    def test_bad_record_is_rejected_naming_the_field_and_the_others_still_come(
        self, hook, source, seed_invoices, seed_bad_record
    ):
        first = seed_invoices(1)
        bad_key, field = seed_bad_record()
        last = seed_invoices(1)
        fetched = self.fetch(hook, source)
        assert [record.source_key for record in fetched] == [*first, bad_key, *last]
        rejected = [record for record in fetched if isinstance(record, RejectedRecord)]
        assert [record.source_key for record in rejected] == [bad_key]
        assert field in " ".join(rejected[0].errors), rejected[0].errors
        assert rejected[0].location

    def test_recorded_invoices_are_not_offered_again(self, hook, source, seed_invoices):
        keys = seed_invoices(3)
        hook.on_invoices_recorded(source=source, source_keys=keys[:2])
        assert [record.source_key for record in self.fetch(hook, source)] == keys[2:]
        # Recording again (after a crash between commit and hook) is harmless.
        hook.on_invoices_recorded(source=source, source_keys=keys[:2])
        assert [record.source_key for record in self.fetch(hook, source)] == keys[2:]

    # --- results --------------------------------------------------------------------------

    def test_valid_outcome_is_written_back_and_a_repeat_changes_nothing(self, hook, source, seed_invoices, read_back):
        keys = seed_invoices(2)
        invoices = self.fetch(hook, source)
        hook.on_invoices_recorded(source=source, source_keys=keys)
        outcome = valid_outcome(invoices[0])
        hook.on_submission_result(source=source, outcomes=[outcome])
        shown = read_back(keys[0])
        assert shown.status == "valid"
        assert (shown.uuid, shown.long_id, shown.validation_link) == (outcome.uuid, outcome.long_id, outcome.validation_link)
        hook.on_submission_result(source=source, outcomes=[outcome])
        assert read_back(keys[0]) == shown
        assert read_back(keys[1]).status not in ("valid", "invalid")

    def test_invalid_outcome_is_written_back_with_its_errors_and_a_repeat_changes_nothing(
        self, hook, source, seed_invoices, read_back
    ):
        keys = seed_invoices(1)
        (invoice,) = self.fetch(hook, source)
        hook.on_invoices_recorded(source=source, source_keys=keys)
        outcome = invalid_outcome(invoice)
        hook.on_submission_result(source=source, outcomes=[outcome])
        shown = read_back(keys[0])
        assert shown.status == "invalid"
        assert "buyer's TIN" in (shown.errors or "")
        hook.on_submission_result(source=source, outcomes=[outcome, outcome])
        assert read_back(keys[0]) == shown

    def test_rejected_record_outcome_is_written_back(self, hook, source, seed_bad_record, read_back):
        bad_key, field = seed_bad_record()
        (rejected,) = self.fetch(hook, source)
        hook.on_invoices_recorded(source=source, source_keys=[bad_key])
        outcome = DocumentOutcome(
            source_key=bad_key, number=rejected.number or bad_key, version=1, state=DocumentState.LOCALLY_INVALID, errors=rejected.errors
        )
        hook.on_submission_result(source=source, outcomes=[outcome])
        shown = read_back(bad_key)
        assert shown.status == "locally_invalid"
        assert field in (shown.errors or "")

    def test_after_valid_a_rejection_request_then_a_cancellation_are_written_back_with_their_reason(
        self, hook, source, seed_invoices, read_back
    ):
        keys = seed_invoices(1)
        (invoice,) = self.fetch(hook, source)
        hook.on_invoices_recorded(source=source, source_keys=keys)
        valid = replace(valid_outcome(invoice), cancellable_until=datetime(2026, 11, 27, 20, 0, tzinfo=UTC))
        hook.on_submission_result(source=source, outcomes=[valid])
        assert read_back(keys[0]).status == "valid"
        requested = replace(
            valid,
            state=DocumentState.REJECTION_REQUESTED,
            reason="Wrong quantity on line 2",
            event_at=datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
        )
        hook.on_submission_result(source=source, outcomes=[requested])
        shown = read_back(keys[0])
        assert (shown.status, shown.uuid) == ("rejection_requested", valid.uuid)
        assert "Wrong quantity on line 2" in (shown.reason or "")
        hook.on_submission_result(source=source, outcomes=[requested])
        assert read_back(keys[0]) == shown
        cancelled = replace(
            requested,
            state=DocumentState.CANCELLED,
            reason="Agreed with the buyer: reissued",
            event_at=datetime(2026, 11, 25, 11, 0, tzinfo=UTC),
            cancellable_until=None,
        )
        hook.on_submission_result(source=source, outcomes=[cancelled])
        shown = read_back(keys[0])
        assert shown.status == "cancelled" and "Agreed with the buyer: reissued" in (shown.reason or "")

    def test_an_older_version_never_overwrites_a_newer_outcome(self, hook, source, seed_invoices, read_back):
        keys = seed_invoices(1)
        (invoice,) = self.fetch(hook, source)
        hook.on_submission_result(source=source, outcomes=[valid_outcome(invoice, version=2)])
        shown = read_back(keys[0])
        # A late retry of version 1's write-back (it came back invalid) arrives afterwards.
        hook.on_submission_result(source=source, outcomes=[invalid_outcome(invoice, version=1)])
        assert read_back(keys[0]) == shown
