"""Packing documents into submissions within MyInvois's limits: at most 100 documents and
5 MB per request. Pure functions, so the limits are tested without any HTTP."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")

#: Bytes of a request around its documents: {"documents":[ ... ]}.
ENVELOPE_OVERHEAD = len('{"documents":[]}')
#: Bytes of one entry besides its Base64 text and code number:
#: {"format":"JSON","documentHash":"<64 hex>","codeNumber":"","document":""}, plus a comma.
ENTRY_OVERHEAD = len('{"format":"JSON","documentHash":"","codeNumber":"","document":""},') + 64


def entry_size(base64_length: int, code_number: str) -> int:
    return ENTRY_OVERHEAD + base64_length + len(code_number.encode("utf-8"))


def pack(
    items: Sequence[T],
    *,
    size_of: Callable[[T], int],
    key_of: Callable[[T], str],
    max_documents: int,
    max_bytes: int,
) -> list[list[T]]:
    """Split ``items`` (in order) into batches within both limits.

    Two items with the same ``key_of`` (the e-invoice number) never share a batch: MyInvois
    answers per code number, and two equal numbers in one answer could not be told apart.
    """
    batches: list[list[T]] = []
    current: list[T] = []
    current_bytes = ENVELOPE_OVERHEAD
    current_keys: set[str] = set()
    deferred: list[T] = []
    for item in items:
        size = size_of(item)
        key = key_of(item)
        if key in current_keys:
            deferred.append(item)
            continue
        if current and (len(current) >= max_documents or current_bytes + size > max_bytes):
            batches.append(current)
            current, current_bytes, current_keys = [], ENVELOPE_OVERHEAD, set()
        current.append(item)
        current_bytes += size
        current_keys.add(key)
    if current:
        batches.append(current)
    if deferred:
        batches.extend(pack(deferred, size_of=size_of, key_of=key_of, max_documents=max_documents, max_bytes=max_bytes))
    return batches


def is_full(
    batch: Sequence[T], *, size_of: Callable[[T], int], max_documents: int, max_bytes: int, largest_item: int
) -> bool:
    """Whether ``batch`` is as full as a submission usefully gets: it holds ``max_documents``,
    or one more item of up to ``largest_item`` bytes might not fit."""
    if len(batch) >= max_documents:
        return True
    return ENVELOPE_OVERHEAD + sum(size_of(item) for item in batch) + largest_item > max_bytes
