"""The Odoo plugin: posted invoices, credit notes and (optionally) vendor bills from Odoo 16-18.

``kind = "odoo"``. Speaks Odoo's external API (XML-RPC or JSON-RPC) with an API key. See
``docs/plugin-odoo.md`` for the settings, the field mapping and a walkthrough.
"""
