"""MyInvois Connector plugin: invoices from a JSON-lines file, results to another."""
