"""MyInvois Connector: ERP invoices in, LHDN-validated e-invoices out.

Plugin authors need exactly one thing from here: the :data:`hookimpl` marker.
"""

import pluggy

from connector_core.hookspecs import PROJECT_NAME

__version__ = "0.1.0"

#: Decorate a function in your plugin module with this to implement a hook.
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)

__all__ = ["__version__", "hookimpl"]
