-- MyInvois Connector staging tables for SQLite.
--
-- The ERP (or a job next to it) inserts one row in einvoice_header per invoice and one row in
-- einvoice_line per invoice line. The connector reads headers whose myinvois_status is NULL or
-- 'pending', marks them 'queued' once they are safely recorded, and writes the MyInvois outcome
-- back into the myinvois_* columns. The ERP never needs to write those columns, except to set
-- myinvois_status back to 'pending' after correcting an invoice that came back invalid.
--
-- The table names may be changed (options header_table / line_table); the column names may not.
-- docs/plugin-sql.md describes every column.

CREATE TABLE einvoice_header (
    -- The ERP's stable key for the invoice; read in ascending order, page by page.
    id INTEGER PRIMARY KEY,
    invoice_number VARCHAR(50) NOT NULL,
    -- 01 invoice, 02 credit note, 03 debit note, 04 refund note, 11-14 self-billed; NULL means 01.
    document_type VARCHAR(2),
    issue_date DATE,
    -- ISO 4217; NULL means MYR. exchange_rate (MYR per unit) is mandatory when not MYR.
    currency VARCHAR(3),
    exchange_rate NUMERIC,
    -- Supplier.
    supplier_name VARCHAR(300),
    supplier_tin VARCHAR(14),
    supplier_id_type VARCHAR(8),
    supplier_id_value VARCHAR(30),
    supplier_sst VARCHAR(35),
    supplier_ttx VARCHAR(17),
    supplier_msic_code VARCHAR(5),
    supplier_business_activity VARCHAR(300),
    supplier_address_line1 VARCHAR(150),
    supplier_address_line2 VARCHAR(150),
    supplier_address_line3 VARCHAR(150),
    supplier_city VARCHAR(50),
    supplier_postal_zone VARCHAR(50),
    supplier_state VARCHAR(2),
    supplier_country VARCHAR(3),
    supplier_phone VARCHAR(20),
    supplier_email VARCHAR(320),
    -- Buyer.
    buyer_name VARCHAR(300),
    buyer_tin VARCHAR(14),
    buyer_id_type VARCHAR(8),
    buyer_id_value VARCHAR(30),
    buyer_sst VARCHAR(35),
    buyer_ttx VARCHAR(17),
    buyer_msic_code VARCHAR(5),
    buyer_business_activity VARCHAR(300),
    buyer_address_line1 VARCHAR(150),
    buyer_address_line2 VARCHAR(150),
    buyer_address_line3 VARCHAR(150),
    buyer_city VARCHAR(50),
    buyer_postal_zone VARCHAR(50),
    buyer_state VARCHAR(2),
    buyer_country VARCHAR(3),
    buyer_phone VARCHAR(20),
    buyer_email VARCHAR(320),
    -- Credit, debit and refund notes: the document they adjust. Several originals are
    -- written ';'-separated in both columns, in the same order.
    original_invoice_number VARCHAR(300),
    original_invoice_uuid VARCHAR(300),
    payment_mode VARCHAR(2),
    payment_terms VARCHAR(300),
    billing_period_start DATE,
    billing_period_end DATE,
    billing_frequency VARCHAR(50),
    invoice_discount NUMERIC,
    invoice_charge NUMERIC,
    rounding_amount NUMERIC,
    notes VARCHAR(300),
    -- Status block, written by the connector.
    -- NULL or 'pending' = to be sent; 'queued' = recorded by the connector; then one of
    -- 'valid', 'invalid', 'rejected', 'cancelled', 'locally_invalid', 'changed_after_valid'.
    myinvois_status VARCHAR(20),
    myinvois_uuid VARCHAR(64),
    myinvois_long_id VARCHAR(128),
    myinvois_validation_link VARCHAR(300),
    -- One problem per line, in words a clerk can act on.
    myinvois_errors TEXT,
    myinvois_submission_uid VARCHAR(64),
    myinvois_updated_at TIMESTAMP,
    -- The connector's version of the invoice the status belongs to; an outcome is only written
    -- over an older version (or, after valid, over the same one: rejection_requested,
    -- cancelled), which makes a repeated write-back harmless.
    myinvois_version INTEGER,
    -- After valid: the reason and time of the buyer's rejection request or of the cancellation
    -- (added in issue 12; an older table gets them with config/sql/add-lifecycle-columns.sql).
    myinvois_reason TEXT,
    myinvois_event_at TIMESTAMP,
    -- Written by the ERP with myinvois_status = 'cancel_requested': why the invoice is to be
    -- cancelled (docs/plugin-sql.md "Cancelling"; an older table gets it with
    -- config/sql/cancel-requests.sql).
    myinvois_cancel_reason VARCHAR(300)
);

CREATE INDEX einvoice_header_pending ON einvoice_header (myinvois_status, id);

CREATE TABLE einvoice_line (
    id INTEGER PRIMARY KEY,
    header_id INTEGER NOT NULL REFERENCES einvoice_header (id),
    -- Order of the line on the invoice; printed as the line id.
    line_no INTEGER NOT NULL,
    description VARCHAR(300),
    -- 3-digit classification code(s) from ClassificationCodes, ';'-separated, e.g. '022'.
    classification_codes VARCHAR(100),
    quantity NUMERIC,
    -- UN/ECE Rec 20 unit code, e.g. 'C62' (one) or 'KGM'.
    unit_code VARCHAR(3),
    unit_price NUMERIC,
    discount_amount NUMERIC,
    charge_amount NUMERIC,
    -- Tax type from TaxTypes: 01 sales, 02 service, ..., 06 not applicable, E exempt.
    tax_type VARCHAR(2),
    tax_rate NUMERIC,
    -- NULL means the line total excluding tax.
    taxable_amount NUMERIC,
    tax_amount NUMERIC,
    tax_exemption_reason VARCHAR(300),
    tariff_code VARCHAR(20),
    origin_country VARCHAR(3)
);

CREATE INDEX einvoice_line_header ON einvoice_line (header_id, line_no);
