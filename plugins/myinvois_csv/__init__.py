"""CSV files as an ERP source: read invoices from an inbox folder, archive processed files,
and write results to an outbox CSV. See docs/plugin-csv.md."""
