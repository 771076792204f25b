-- Lets the ERP ask to cancel validated invoices through the staging table (docs/plugin-sql.md,
-- "Cancelling"): it sets myinvois_status = 'cancel_requested' and writes why here (1 to 300
-- characters, shown to the buyer by MyInvois). The same statement on PostgreSQL, MariaDB and
-- SQLite. Run it once on a table created before this column existed (the staging DDL creates
-- it for a new installation). Rename einvoice_header if header_table says otherwise.
ALTER TABLE einvoice_header ADD COLUMN myinvois_cancel_reason VARCHAR(300);
