"""An Odoo stand-in that speaks Odoo's real external API on loopback, over in-memory records.

Odoo cannot run in this environment, so the Odoo plugin is tested against this instead. It is
protocol-faithful where the plugin could get it wrong:

* **XML-RPC** on ``/xmlrpc/2/common`` (``version``, ``authenticate``, ``login``) and
  ``/xmlrpc/2/object`` (``execute_kw``), served by the standard library's XML-RPC server, so
  the bytes on the wire are real XML-RPC; **JSON-RPC** on ``/jsonrpc`` with
  ``{"service": "common"|"object", "method": ..., "args": [...]}``.
* The call shapes Odoo accepts: ``authenticate(db, login, password, user_agent_env)`` returns
  the uid or ``False``; ``execute_kw(db, uid, password, model, method, args, kwargs)``; ORM
  methods with Odoo's own signatures (``search_read(domain, fields, offset, limit, order)``,
  ``read(ids, fields)``, ``write(ids, vals)``, ``create(vals_list)`` (a dict or a list of dicts;
  binary fields as Base64 text), ``message_post(**kwargs)`` on one record, ...).
* Odoo's failures: a wrong password is ``AccessDenied`` (XML-RPC fault code 3, JSON-RPC error
  ``odoo.exceptions.AccessDenied``); an unknown model is a ``UserError`` ("Object x doesn't
  exist"); an unknown field is the ``ValueError`` "Invalid field 'x' on model 'y'" as an
  application error (fault code 1 with the traceback text); writing where the user may only
  read is an ``AccessError`` (fault code 4). ``None`` never crosses the wire: empty values are
  ``False``, many2one values ``[id, display_name]``, dates ``YYYY-MM-DD`` strings.
* Version differences the plugin must respect: ``message_post(body_is_html=...)`` exists from
  Odoo 17 on; Odoo 16 refuses the keyword.

Every request is recorded in :attr:`OdooStandin.calls` so tests can assert the exact shapes sent.
Domains support the prefix operators ``&``, ``|``, ``!`` and the leaf operators ``=``, ``!=``,
``in``, ``not in``, ``<``, ``<=``, ``>``, ``>=``, ``like``, ``ilike``, ``=?``; anything else
is refused as Odoo refuses an invalid domain.
"""

from __future__ import annotations

import base64
import json
import re
import threading
import traceback
import xmlrpc.client
from dataclasses import dataclass, field
from datetime import date
from http.server import BaseHTTPRequestHandler
from socketserver import ThreadingMixIn
from typing import Any
from xmlrpc.server import MultiPathXMLRPCServer, SimpleXMLRPCDispatcher, SimpleXMLRPCRequestHandler

# Odoo's XML-RPC fault codes (odoo/service/wsgi_server.py).
FAULT_APPLICATION_ERROR = 1
FAULT_WARNING = 2
FAULT_ACCESS_DENIED = 3
FAULT_ACCESS_ERROR = 4


class OdooError(Exception):
    """An exception as Odoo raises it; turned into an XML-RPC fault or a JSON-RPC error."""

    def __init__(self, name: str, message: str, fault_code: int) -> None:
        super().__init__(message)
        self.name = name
        self.message = message
        self.fault_code = fault_code

    def fault_string(self) -> str:
        if self.fault_code == FAULT_APPLICATION_ERROR:
            # Odoo sends the formatted traceback for unexpected exceptions.
            short = self.name.rsplit(".", 1)[-1]
            return f'Traceback (most recent call last):\n  File "odoo/service/model.py", line 1, in execute_kw\n{short}: {self.message}\n'
        return self.message


def access_denied() -> OdooError:
    return OdooError("odoo.exceptions.AccessDenied", "Access Denied", FAULT_ACCESS_DENIED)


def invalid_field(model: str, name: str) -> OdooError:
    return OdooError("builtins.ValueError", f"Invalid field {name!r} on model {model!r}", FAULT_APPLICATION_ERROR)


@dataclass(frozen=True)
class Field:
    type: str  # char, text, html, integer, float, monetary, boolean, date, selection, many2one, one2many, many2many
    relation: str | None = None
    string: str = ""


@dataclass
class Model:
    name: str
    description: str
    fields: dict[str, Field]
    mail_thread: bool = False


@dataclass
class User:
    uid: int
    login: str
    api_key: str
    read_only: bool = False


@dataclass
class Call:
    """One request as received: ``service`` is common or object; for object calls ``model``,
    ``method``, ``args`` and ``kwargs`` are the execute_kw arguments."""

    protocol: str
    service: str
    method: str
    args: list[Any]
    model: str | None = None
    model_method: str | None = None
    model_args: list[Any] = field(default_factory=list)
    model_kwargs: dict[str, Any] = field(default_factory=dict)


def _char(string: str = "") -> Field:
    return Field("char", string=string)


def standard_models(custom_fields: bool = True) -> dict[str, Model]:
    """The Odoo models the plugin reads, with the fields it reads, as Odoo 16-18 name them.

    ``custom_fields`` adds the ``x_`` fields the plugin's default field mapping expects.
    """
    partner = {
        "name": _char("Name"),
        "display_name": _char("Display Name"),
        "is_company": Field("boolean"),
        "vat": _char("Tax ID"),
        "company_registry": _char("Company ID"),
        "street": _char(),
        "street2": _char(),
        "city": _char(),
        "zip": _char(),
        "state_id": Field("many2one", "res.country.state"),
        "country_id": Field("many2one", "res.country"),
        "phone": _char(),
        "mobile": _char(),
        "email": _char(),
    }
    product = {"name": _char(), "display_name": _char(), "default_code": _char()}
    tax = {"name": _char(), "amount": Field("float"), "amount_type": Field("selection"), "type_tax_use": Field("selection")}
    move = {
        "name": _char("Number"),
        "display_name": _char(),
        "move_type": Field("selection"),
        "state": Field("selection"),
        "invoice_date": Field("date"),
        "partner_id": Field("many2one", "res.partner"),
        "company_id": Field("many2one", "res.company"),
        "currency_id": Field("many2one", "res.currency"),
        "reversed_entry_id": Field("many2one", "account.move"),
        "ref": _char(),
        "amount_untaxed": Field("monetary"),
        "amount_total": Field("monetary"),
        "invoice_line_ids": Field("one2many", "account.move.line"),
    }
    line = {
        "move_id": Field("many2one", "account.move"),
        "display_type": Field("selection"),
        "sequence": Field("integer"),
        "name": Field("text", string="Label"),
        "product_id": Field("many2one", "product.product"),
        "quantity": Field("float"),
        "price_unit": Field("float"),
        "discount": Field("float"),
        "price_subtotal": Field("monetary"),
        "price_total": Field("monetary"),
        "tax_ids": Field("many2many", "account.tax"),
    }
    if custom_fields:
        partner |= {
            "x_tin": _char("MyInvois TIN"),
            "x_brn": _char("MyInvois BRN"),
            "x_sst": _char("SST No."),
            "x_msic_code": _char("MSIC Code"),
            "x_business_activity": _char("Business Activity"),
        }
        product |= {"x_myinvois_class": _char("MyInvois Classification")}
        tax |= {"x_myinvois_tax_type": _char("MyInvois Tax Type")}
        move |= {
            "x_myinvois_status": _char("MyInvois Status"),
            "x_myinvois_uuid": _char("MyInvois UUID"),
            "x_myinvois_long_id": _char("MyInvois Long ID"),
            "x_myinvois_validation_link": _char("MyInvois Validation Link"),
            "x_myinvois_version": Field("integer", string="MyInvois Version"),
            "x_myinvois_cancel_reason": _char("MyInvois Cancel Reason"),
        }
    return {
        "res.partner": Model("res.partner", "Contact", partner, mail_thread=True),
        "res.company": Model("res.company", "Companies", {"name": _char(), "partner_id": Field("many2one", "res.partner"), "currency_id": Field("many2one", "res.currency")}),
        "res.currency": Model("res.currency", "Currency", {"name": _char(), "rate": Field("float"), "symbol": _char()}),
        "res.country": Model("res.country", "Country", {"name": _char(), "code": _char()}),
        "res.country.state": Model("res.country.state", "Country state", {"name": _char(), "code": _char(), "country_id": Field("many2one", "res.country")}),
        "product.product": Model("product.product", "Product Variant", product),
        "account.tax": Model("account.tax", "Tax", tax),
        "account.move": Model("account.move", "Journal Entry", move, mail_thread=True),
        "account.move.line": Model("account.move.line", "Journal Item", line),
        "mail.message": Model(
            "mail.message",
            "Message",
            {"model": _char(), "res_id": Field("integer"), "body": Field("html"), "message_type": Field("selection"), "subtype_xmlid": _char(), "author_id": Field("many2one", "res.partner")},
        ),
        # A file attached to a record (res_model, res_id); ``datas`` is the content in Base64.
        "ir.attachment": Model(
            "ir.attachment",
            "Attachment",
            {"name": _char(), "type": Field("selection"), "datas": Field("binary"), "res_model": _char(), "res_id": Field("integer"), "mimetype": _char()},
        ),
    }


# --- domains ------------------------------------------------------------------------------------

_LEAF_OPERATORS = {"=", "!=", "in", "not in", "<", "<=", ">", ">=", "like", "ilike", "=?"}


def _like(value: Any, pattern: Any, insensitive: bool) -> bool:
    if not isinstance(value, str) or not isinstance(pattern, str):
        return False
    return (pattern.lower() in value.lower()) if insensitive else (pattern in value)


def _compare(value: Any, operator: str, operand: Any) -> bool:
    if operator == "=?":
        return operand is False or operand is None or value == operand
    if operator == "=":
        return value == operand if operand is not False else value in (False, None, "", [])
    if operator == "!=":
        return value != operand if operand is not False else value not in (False, None, "", [])
    if operator == "in":
        return value in operand
    if operator == "not in":
        return value not in operand
    if operator in ("like", "ilike"):
        return _like(value, operand, operator == "ilike")
    if value in (False, None):
        return False
    return {"<": value < operand, "<=": value <= operand, ">": value > operand, ">=": value >= operand}[operator]


# --- the stand-in -------------------------------------------------------------------------------


class OdooStandin:
    """In-memory Odoo with a real XML-RPC and JSON-RPC front. Use as a context manager."""

    MESSAGE_POST_KWARGS_16 = frozenset({"body", "subject", "message_type", "subtype_xmlid", "partner_ids", "author_id", "email_from", "attachment_ids"})

    def __init__(self, database: str = "demo", version: str = "17.0", custom_fields: bool = True) -> None:
        self.database = database
        self.version = version
        self.major = int(version.split(".")[0])
        self.models = standard_models(custom_fields)
        self.records: dict[str, dict[int, dict[str, Any]]] = {name: {} for name in self.models}
        self.users: dict[str, User] = {}
        self.calls: list[Call] = []
        self._next_id: dict[str, int] = {name: 1 for name in self.models}
        self._lock = threading.RLock()
        self._server: MultiPathXMLRPCServer | None = None
        self._thread: threading.Thread | None = None

    # --- test-side setup (not recorded) --------------------------------------------------------

    def add_user(self, login: str, api_key: str, read_only: bool = False) -> int:
        uid = len(self.users) + 2  # uid 1 is OdooBot/__system__ in a real database
        self.users[login] = User(uid, login, api_key, read_only)
        return uid

    def create(self, model: str, /, **values: Any) -> int:
        with self._lock:
            spec = self.models[model]
            for name in values:
                if name not in spec.fields:
                    raise KeyError(f"{model} has no field {name}")
            record_id = self._next_id[model]
            self._next_id[model] += 1
            record = {name: (False if f.type not in ("one2many", "many2many") else []) for name, f in spec.fields.items()}
            record.update(values)
            record["id"] = record_id
            self.records[model][record_id] = record
            return record_id

    def get(self, model: str, record_id: int) -> dict[str, Any]:
        return dict(self.records[model][record_id])

    def messages_on(self, model: str, record_id: int) -> list[dict[str, Any]]:
        return [m for m in self.records["mail.message"].values() if m["model"] == model and m["res_id"] == record_id]

    def object_calls(self, model: str | None = None, method: str | None = None) -> list[Call]:
        return [
            c
            for c in self.calls
            if c.service == "object" and (model is None or c.model == model) and (method is None or c.model_method == method)
        ]

    # --- server -----------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        assert self._server is not None, "start() the stand-in first"
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> OdooStandin:
        """Serve on an ephemeral loopback port (see :attr:`url`)."""
        return self.start_on(0)

    def start_on(self, port: int) -> OdooStandin:
        standin = self

        class Handler(SimpleXMLRPCRequestHandler):
            rpc_paths = ("/xmlrpc/2/common", "/xmlrpc/2/object")

            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                if self.path == "/jsonrpc":
                    standin._serve_jsonrpc(self)
                else:
                    super().do_POST()

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep test output clean

        class Server(ThreadingMixIn, MultiPathXMLRPCServer):
            daemon_threads = True

        server = Server(("127.0.0.1", port), requestHandler=Handler, allow_none=False, logRequests=False)
        for service, dispatcher_function in (("common", self._xmlrpc_common), ("object", self._xmlrpc_object)):
            dispatcher = SimpleXMLRPCDispatcher(allow_none=False, encoding="utf-8")
            dispatcher._dispatch = dispatcher_function  # route every method name to one function  # noqa: SLF001
            server.add_dispatcher(f"/xmlrpc/2/{service}", dispatcher)
        self._server = server
        # A short poll interval: shutdown() waits for it, once per test.
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.02}, name="odoo-standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def __enter__(self) -> OdooStandin:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- protocol fronts ------------------------------------------------------------------------

    def _xmlrpc_common(self, method: str, params: tuple) -> Any:
        return self._as_xmlrpc(lambda: self._dispatch("xmlrpc", "common", method, list(params)))

    def _xmlrpc_object(self, method: str, params: tuple) -> Any:
        return self._as_xmlrpc(lambda: self._dispatch("xmlrpc", "object", method, list(params)))

    @staticmethod
    def _as_xmlrpc(call) -> Any:  # noqa: ANN001
        try:
            return call()
        except OdooError as error:
            raise xmlrpc.client.Fault(error.fault_code, error.fault_string()) from None

    def _serve_jsonrpc(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("Content-Length", 0))
        request = json.loads(handler.rfile.read(length) or b"{}")
        request_id = request.get("id")
        params = request.get("params") or {}
        try:
            if request.get("jsonrpc") != "2.0" or request.get("method") != "call":
                raise OdooError("werkzeug.exceptions.BadRequest", "Invalid JSON-RPC request", FAULT_APPLICATION_ERROR)
            result = self._dispatch("jsonrpc", params.get("service"), params.get("method"), list(params.get("args") or []))
            body: dict[str, Any] = {"jsonrpc": "2.0", "id": request_id, "result": result}
        except OdooError as error:
            body = {
                "jsonrpc": "2.0",
                "id": request_id,
                "error": {
                    "code": 200,
                    "message": "Odoo Server Error",
                    "data": {
                        "name": error.name,
                        "debug": error.fault_string() if error.fault_code == FAULT_APPLICATION_ERROR else "",
                        "message": error.message,
                        "arguments": [error.message],
                        "context": {},
                    },
                },
            }
        payload = json.dumps(body).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(payload)))
        handler.end_headers()
        handler.wfile.write(payload)

    # --- services -------------------------------------------------------------------------------

    def _dispatch(self, protocol: str, service: Any, method: Any, args: list[Any]) -> Any:
        call = Call(protocol, str(service), str(method), args)
        if service == "object" and method == "execute_kw" and len(args) >= 5:
            call.model, call.model_method = args[3], args[4]
            call.model_args = args[5] if len(args) > 5 else []
            call.model_kwargs = args[6] if len(args) > 6 else {}
        with self._lock:
            self.calls.append(call)
            if service == "common":
                return self._common(method, args)
            if service == "object":
                if method != "execute_kw":
                    raise OdooError("builtins.NameError", f"Method not available {method}", FAULT_APPLICATION_ERROR)
                return self._execute_kw(*args)
            raise OdooError("builtins.KeyError", f"No such service {service!r}", FAULT_APPLICATION_ERROR)

    def _common(self, method: str, args: list[Any]) -> Any:
        if method == "version":
            major, minor = self.version.split(".")[:2]
            return {
                "server_version": self.version,
                "server_version_info": [int(major), int(minor), 0, "final", 0, ""],
                "server_serie": self.version,
                "protocol_version": 1,
            }
        if method in ("authenticate", "login"):
            expected = 4 if method == "authenticate" else 3
            if len(args) != expected:
                raise OdooError("builtins.TypeError", f"{method}() takes {expected} positional arguments but {len(args)} were given", FAULT_APPLICATION_ERROR)
            database, login, password = args[:3]
            if database != self.database:
                raise OdooError("psycopg2.OperationalError", f'connection to server failed: FATAL: database "{database}" does not exist', FAULT_APPLICATION_ERROR)
            user = self.users.get(login)
            return user.uid if user and user.api_key == password else False
        raise OdooError("builtins.NameError", f"Method not available {method}", FAULT_APPLICATION_ERROR)

    def _execute_kw(self, database: Any, uid: Any, password: Any, model: Any, method: Any, args: Any = None, kwargs: Any = None) -> Any:
        if database != self.database:
            raise OdooError("psycopg2.OperationalError", f'FATAL: database "{database}" does not exist', FAULT_APPLICATION_ERROR)
        user = next((u for u in self.users.values() if u.uid == uid), None)
        if user is None or user.api_key != password:
            raise access_denied()
        if not isinstance(args, list) or not isinstance(kwargs if kwargs is not None else {}, dict):
            raise OdooError("builtins.TypeError", "execute_kw() args must be a list and kwargs a dict", FAULT_APPLICATION_ERROR)
        if model not in self.models:
            raise OdooError("odoo.exceptions.UserError", f"Object {model} doesn't exist", FAULT_WARNING)
        handler = getattr(self, f"_orm_{str(method).replace('.', '_')}", None)
        if handler is None:
            raise OdooError("builtins.AttributeError", f"The method '{method}' does not exist on the model '{model}'", FAULT_APPLICATION_ERROR)
        try:
            return self._wire(handler(user, self.models[model], *args, **(kwargs or {})))
        except TypeError as exc:
            # Odoo answers a wrong signature with the TypeError as an application error.
            raise OdooError("builtins.TypeError", str(exc), FAULT_APPLICATION_ERROR) from None

    # --- ORM methods (Odoo's signatures) ----------------------------------------------------------

    def _orm_search_read(self, user: User, model: Model, domain=None, fields=None, offset=0, limit=None, order=None):  # noqa: ANN001, ANN202
        ids = self._search(model, domain or [], offset, limit, order)
        return self._read(model, ids, fields)

    def _orm_search(self, user: User, model: Model, domain, offset=0, limit=None, order=None):  # noqa: ANN001, ANN202
        return self._search(model, domain, offset, limit, order)

    def _orm_search_count(self, user: User, model: Model, domain, limit=None):  # noqa: ANN001, ANN202
        return len(self._search(model, domain, 0, limit, None))

    def _orm_read(self, user: User, model: Model, ids, fields=None):  # noqa: ANN001, ANN202
        ids = [ids] if isinstance(ids, int) else list(ids)
        missing = [i for i in ids if i not in self.records[model.name]]
        if missing:
            raise OdooError(
                "odoo.exceptions.MissingError",
                f"Record does not exist or has been deleted.\n(Record: {model.name}({missing[0]},), User: {user.uid})",
                FAULT_WARNING,
            )
        return self._read(model, ids, fields)

    def _orm_fields_get(self, user: User, model: Model, allfields=None, attributes=None):  # noqa: ANN001, ANN202
        names = allfields or list(model.fields)
        wanted = attributes or ["type", "string", "relation"]
        result = {}
        for name in names:
            if name in model.fields:
                spec = model.fields[name]
                full = {"type": spec.type, "string": spec.string or name.replace("_", " ").title(), "relation": spec.relation or False}
                result[name] = {k: v for k, v in full.items() if k in wanted}
        return result

    def _orm_write(self, user: User, model: Model, ids, vals):  # noqa: ANN001, ANN202
        if user.read_only:
            raise OdooError(
                "odoo.exceptions.AccessError",
                f"You are not allowed to modify '{model.description}' ({model.name}) records.\n\n"
                "This operation is allowed for the following groups:\n\t- Accounting/Billing\n\nContact your administrator to request access if necessary.",
                FAULT_ACCESS_ERROR,
            )
        if not isinstance(vals, dict):
            raise OdooError("builtins.TypeError", "write() vals must be a dict", FAULT_APPLICATION_ERROR)
        for name in vals:
            if name not in model.fields:
                raise invalid_field(model.name, name)
        self._orm_read(user, model, ids, ["id"])
        for record_id in ids:
            self.records[model.name][record_id].update(vals)
        return True

    def _orm_create(self, user: User, model: Model, vals_list):  # noqa: ANN001, ANN202
        """Odoo's ``create(vals_list)``: one dict gives one id, a list of dicts a list of ids.
        Binary fields take Base64 text (what Odoo stores and returns for them), never raw bytes."""
        if user.read_only:
            raise OdooError(
                "odoo.exceptions.AccessError",
                f"You are not allowed to create '{model.description}' ({model.name}) records.",
                FAULT_ACCESS_ERROR,
            )
        single = isinstance(vals_list, dict)
        rows = [vals_list] if single else vals_list
        if not isinstance(rows, list) or not all(isinstance(row, dict) for row in rows):
            raise OdooError("builtins.TypeError", "create() takes a dict or a list of dicts", FAULT_APPLICATION_ERROR)
        for row in rows:
            for name, value in row.items():
                if name not in model.fields:
                    raise invalid_field(model.name, name)
                if model.fields[name].type == "binary" and value is not False:
                    if not isinstance(value, str):
                        raise OdooError("builtins.TypeError", f"Object of type {type(value).__name__} is not JSON serializable (field {name}: send Base64 text)", FAULT_APPLICATION_ERROR)
                    try:
                        base64.b64decode(value, validate=True)
                    except ValueError:
                        raise OdooError("binascii.Error", f"Incorrect padding (field {name} is not Base64)", FAULT_APPLICATION_ERROR) from None
            if model.name == "ir.attachment" and row.get("res_model") and row.get("res_id"):
                target = self.models.get(row["res_model"])
                if target is None or row["res_id"] not in self.records[target.name]:
                    raise OdooError("odoo.exceptions.MissingError", "Record does not exist or has been deleted.", FAULT_WARNING)
        ids = [self.create(model.name, **row) for row in rows]
        return ids[0] if single else ids

    def _orm_check_access_rights(self, user: User, model: Model, operation, raise_exception=True):  # noqa: ANN001, ANN202
        allowed = operation == "read" or not user.read_only
        if not allowed and raise_exception:
            raise OdooError(
                "odoo.exceptions.AccessError",
                f"You are not allowed to modify '{model.description}' ({model.name}) records.",
                FAULT_ACCESS_ERROR,
            )
        return allowed

    def _orm_message_post(self, user: User, model: Model, ids, **kwargs):  # noqa: ANN001, ANN202
        if not model.mail_thread:
            raise OdooError("builtins.AttributeError", f"The method 'message_post' does not exist on the model '{model.name}'", FAULT_APPLICATION_ERROR)
        allowed = self.MESSAGE_POST_KWARGS_16 | ({"body_is_html"} if self.major >= 17 else set())
        unexpected = sorted(set(kwargs) - allowed)
        if unexpected:
            raise TypeError(f"MailThread.message_post() got an unexpected keyword argument '{unexpected[0]}'")
        ids = [ids] if isinstance(ids, int) else list(ids)
        if len(ids) != 1:
            raise OdooError("builtins.ValueError", f"Expected singleton: {model.name}({', '.join(map(str, ids))},)", FAULT_APPLICATION_ERROR)
        self._orm_read(user, model, ids, ["id"])
        body = kwargs.get("body", "")
        if self.major >= 17 and not kwargs.get("body_is_html"):
            # Odoo 17+ escapes a plain str body: markup sent without body_is_html shows as text.
            body = body.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
        return self.create(
            "mail.message",
            model=model.name,
            res_id=ids[0],
            body=body,
            message_type=kwargs.get("message_type", "notification"),
            subtype_xmlid=kwargs.get("subtype_xmlid", False),
        )

    # --- helpers ----------------------------------------------------------------------------------

    def _search(self, model: Model, domain: Any, offset: Any, limit: Any, order: Any) -> list[int]:
        if not isinstance(domain, list):
            raise OdooError("builtins.ValueError", f"Invalid domain {domain!r}", FAULT_APPLICATION_ERROR)
        predicate = self._compile_domain(model, domain)
        records = [r for r in self.records[model.name].values() if predicate(r)]
        for name, descending in reversed(self._parse_order(model, order or "id")):
            records.sort(key=lambda r, n=name: (r[n] is False, r[n] if not isinstance(r[n], list) else r[n][0]), reverse=descending)
        ids = [r["id"] for r in records][int(offset or 0) :]
        return ids[: int(limit)] if limit else ids

    def _parse_order(self, model: Model, order: str) -> list[tuple[str, bool]]:
        terms = []
        for part in order.split(","):
            words = part.split()
            if not words or words[0] not in (*model.fields, "id") or len(words) > 2 or (len(words) == 2 and words[1].lower() not in ("asc", "desc")):
                raise OdooError("builtins.ValueError", f"Invalid \"order\" specified ({order}).", FAULT_APPLICATION_ERROR)
            terms.append((words[0], len(words) == 2 and words[1].lower() == "desc"))
        return terms

    def _compile_domain(self, model: Model, domain: list[Any]):  # noqa: ANN202
        """Odoo's Polish-notation domains: read from the end, operators pop their operands, and
        whatever is left at the start is joined with an implicit '&'."""
        stack: list[Any] = []
        for element in reversed(domain):
            if element in ("&", "|"):
                if len(stack) < 2:
                    raise OdooError("builtins.ValueError", f"Invalid domain {domain!r}", FAULT_APPLICATION_ERROR)
                left, right = stack.pop(), stack.pop()
                stack.append((lambda r, a=left, b=right: a(r) and b(r)) if element == "&" else (lambda r, a=left, b=right: a(r) or b(r)))
            elif element == "!":
                if not stack:
                    raise OdooError("builtins.ValueError", f"Invalid domain {domain!r}", FAULT_APPLICATION_ERROR)
                operand = stack.pop()
                stack.append(lambda r, a=operand: not a(r))
            elif isinstance(element, (list, tuple)) and len(element) == 3:
                name, operator, value = element
                if name != "id" and name not in model.fields:
                    raise invalid_field(model.name, name)
                if operator not in _LEAF_OPERATORS:
                    raise OdooError("builtins.ValueError", f"Invalid leaf {list(element)!r}", FAULT_APPLICATION_ERROR)
                if operator in ("in", "not in") and not isinstance(value, list):
                    value = [value]
                relational = model.fields[name].type if name != "id" else "integer"

                def leaf(r, n=name, o=operator, v=value, kind=relational):  # noqa: ANN001, ANN202
                    current = r[n]
                    if kind in ("one2many", "many2many"):
                        return any(_compare(item, o, v) for item in current) if current else _compare(False, o, v)
                    return _compare(current, o, v)

                stack.append(leaf)
            else:
                raise OdooError("builtins.ValueError", f"Invalid leaf {element!r}", FAULT_APPLICATION_ERROR)
        predicate = lambda r: True  # noqa: E731
        for term in stack:
            predicate = lambda r, a=term, b=predicate: a(r) and b(r)  # noqa: E731
        return predicate

    def _display_name(self, model: str, record_id: int) -> str:
        record = self.records[model][record_id]
        if model == "res.country.state" and record.get("country_id"):
            return f"{record['name']} ({self.records['res.country'][record['country_id']]['code']})"
        return str(record.get("name") or f"{model},{record_id}")

    def _read(self, model: Model, ids: list[int], fields: Any) -> list[dict[str, Any]]:
        names = list(fields) if fields else list(model.fields)
        for name in names:
            if name not in model.fields and name != "id":
                raise invalid_field(model.name, name)
        rows = []
        for record_id in ids:
            record = self.records[model.name][record_id]
            row: dict[str, Any] = {"id": record_id}
            for name in names:
                spec = model.fields.get(name)
                value = record.get(name, False)
                if name == "display_name":
                    value = self._display_name(model.name, record_id)
                elif spec is not None and spec.type == "many2one" and value:
                    value = [value, self._display_name(spec.relation, value)]
                row[name] = value
            rows.append(row)
        return rows

    def _wire(self, value: Any) -> Any:
        """Odoo never sends None: empty is False. Dates travel as strings."""
        if value is None:
            return False
        if isinstance(value, date):
            return value.isoformat()
        if isinstance(value, dict):
            return {k: self._wire(v) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self._wire(v) for v in value]
        return value


# --- demo data ----------------------------------------------------------------------------------

STATE_NAMES = {"Selangor": "SGR", "Kuala Lumpur": "KUL", "Johor": "JHR", "Pulau Pinang": "PNG"}


@dataclass
class DemoOdoo:
    """Ids of the demo records seeded by :func:`seed_demo_company`."""

    company_partner: int
    company: int
    myr: int
    usd: int
    malaysia: int
    states: dict[str, int]
    customer: int
    vendor: int
    product: int
    service: int
    sales_tax: int
    service_tax: int


def seed_demo_company(odoo: OdooStandin) -> DemoOdoo:
    """The demo taxpayer as an Odoo company, one customer, one vendor, products and taxes."""
    malaysia = odoo.create("res.country", name="Malaysia", code="MY")
    states = {name: odoo.create("res.country.state", name=name, code=code, country_id=malaysia) for name, code in STATE_NAMES.items()}
    myr = odoo.create("res.currency", name="MYR", rate=1.0, symbol="RM")
    usd = odoo.create("res.currency", name="USD", rate=0.2236, symbol="$")
    company_partner = odoo.create(
        "res.partner",
        name="Syarikat Demo Sdn. Bhd.",
        is_company=True,
        vat="C25845632020",
        x_tin="C25845632020",
        x_brn="202001234567",
        x_sst="NA",
        x_msic_code="46510",
        x_business_activity="Wholesale of computer hardware, software and peripherals",
        street="Lot 66, Bangunan Merdeka",
        street2="Persiaran Jaya",
        city="Kuala Lumpur",
        zip="50480",
        state_id=states["Kuala Lumpur"],
        country_id=malaysia,
        phone="+60123456789",
        email="billing@demo.example",
    )
    company = odoo.create("res.company", name="Syarikat Demo Sdn. Bhd.", partner_id=company_partner, currency_id=myr)
    customer = odoo.create(
        "res.partner",
        name="Pelanggan Contoh Sdn. Bhd.",
        is_company=True,
        x_tin="C58101234560",
        x_brn="200501012345",
        street="No. 8, Jalan Contoh",
        city="Shah Alam",
        zip="40000",
        state_id=states["Selangor"],
        country_id=malaysia,
        phone="+60387654321",
    )
    vendor = odoo.create(
        "res.partner",
        name="Pembekal Kecil Enterprise",
        x_tin="IG21136626090",
        x_brn="NA",
        x_msic_code="00000",
        x_business_activity="Not applicable",
        street="12, Jalan Kecil",
        city="Johor Bahru",
        state_id=states["Johor"],
        country_id=malaysia,
        phone="+60123000111",
    )
    product = odoo.create("product.product", name="Laptop Peripherals", display_name="[LP] Laptop Peripherals", x_myinvois_class="022")
    service = odoo.create("product.product", name="Installation", display_name="Installation", x_myinvois_class="022")
    sales_tax = odoo.create("account.tax", name="SST 10%", amount=10.0, amount_type="percent", type_tax_use="sale", x_myinvois_tax_type="01")
    service_tax = odoo.create("account.tax", name="Service Tax 8%", amount=8.0, amount_type="percent", type_tax_use="sale", x_myinvois_tax_type="02")
    return DemoOdoo(company_partner, company, myr, usd, malaysia, states, customer, vendor, product, service, sales_tax, service_tax)


def create_move(
    odoo: OdooStandin,
    demo: DemoOdoo,
    *,
    move_type: str = "out_invoice",
    partner: int | None = None,
    state: str = "posted",
    currency: int | None = None,
    reversed_entry: int | None = None,
    name: str | None = None,
) -> int:
    """A posted invoice with two product lines (and the section/note lines Odoo also stores)."""
    number = len(odoo.records["account.move"]) + 1
    prefix = {"out_invoice": "INV", "out_refund": "RINV", "in_invoice": "BILL", "in_refund": "RBILL"}[move_type]
    move = odoo.create(
        "account.move",
        name=name or f"{prefix}/2026/{number:05d}",
        move_type=move_type,
        state=state,
        invoice_date="2026-11-20",
        partner_id=partner or (demo.vendor if move_type.startswith("in_") else demo.customer),
        company_id=demo.company,
        currency_id=currency or demo.myr,
        reversed_entry_id=reversed_entry or False,
        amount_untaxed=381.0,
        amount_total=417.5,
    )
    lines = [
        odoo.create("account.move.line", move_id=move, display_type="line_section", sequence=1, name="Hardware"),
        odoo.create(
            "account.move.line", move_id=move, display_type="product", sequence=2, name="Laptop Peripherals", product_id=demo.product,
            quantity=2.0, price_unit=150.5, discount=0.0, price_subtotal=301.0, price_total=331.1, tax_ids=[demo.sales_tax],
        ),
        odoo.create(
            "account.move.line", move_id=move, display_type="product", sequence=3, name="Installation on site", product_id=demo.service,
            quantity=1.0, price_unit=100.0, discount=20.0, price_subtotal=80.0, price_total=86.4, tax_ids=[demo.service_tax],
        ),
        odoo.create("account.move.line", move_id=move, display_type="payment_term", sequence=9, name="", price_subtotal=-417.5),
    ]
    odoo.records["account.move"][move]["invoice_line_ids"] = lines[:3]
    return move


def seed_demo_invoices(odoo: OdooStandin, demo: DemoOdoo) -> list[int]:
    """Three good invoices and one whose customer has no TIN, as in the SQL demo."""
    walk_in = odoo.create(
        "res.partner", name="Kedai Runcit Tanpa TIN", x_brn="201901000001", street="12, Jalan Pasar", city="Klang",
        state_id=demo.states["Selangor"], country_id=demo.malaysia, phone="+60333334444",
    )
    return [
        create_move(odoo, demo),
        create_move(odoo, demo, currency=demo.usd),
        create_move(odoo, demo, partner=walk_in),
        create_move(odoo, demo),
    ]


def main(argv: list[str] | None = None) -> None:
    """Serve a demo Odoo for trying config/odoo.toml: python -m tests.odoo_standin --port 8069."""
    import argparse
    import time

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--port", type=int, default=8069)
    parser.add_argument("--api-key", default="demo-odoo-key")
    parser.add_argument("--version", default="17.0")
    args = parser.parse_args(argv)
    odoo = OdooStandin(version=args.version)
    odoo.add_user("connector@demo.example", args.api_key)
    seed_demo_invoices(odoo, seed_demo_company(odoo))
    odoo.start_on(args.port)
    print(f"Odoo stand-in {args.version} on {odoo.url}, database 'demo', login 'connector@demo.example'; Ctrl-C stops it")
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        odoo.stop()


if __name__ == "__main__":
    main()
