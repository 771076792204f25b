"""Invoice → MyInvois UBL 2.1 JSON (version 1.0), its hash and Base64, and pre-validation that
names every field MyInvois would refuse, before any API call."""

from connector_core.document.builder import (
    BuiltDocument,
    build,
    build_document,
    serialize,
    validation_link,
)
from connector_core.document.prevalidate import (
    MAX_DOCUMENT_BYTES,
    Problem,
    check_size,
    describe_problems,
    prevalidate,
)

__all__ = [
    "MAX_DOCUMENT_BYTES",
    "BuiltDocument",
    "Problem",
    "build",
    "build_document",
    "check_size",
    "describe_problems",
    "prevalidate",
    "serialize",
    "validation_link",
]
