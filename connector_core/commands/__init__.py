"""Commands about one invoice, or a period of them, that an operator or clerk runs by hand:
``show``, ``history``, ``retry``, ``export`` (and ``cancel``). Each is a click command that
``connector_core.cli`` registers; they read the ledger through :mod:`connector_core.ledger.lookup`.
"""
