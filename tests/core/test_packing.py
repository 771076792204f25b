"""Packing documents into submissions within MyInvois's 100-document and 5 MB limits."""

from connector_core.pipeline.packing import ENVELOPE_OVERHEAD, entry_size, is_full, pack


def _pack(items, max_documents=100, max_bytes=5 * 1024 * 1024):
    return pack(items, size_of=lambda i: i[1], key_of=lambda i: i[0], max_documents=max_documents, max_bytes=max_bytes)


def test_at_most_one_hundred_documents_per_submission():
    batches = _pack([(f"N{i}", 1000) for i in range(250)])
    assert [len(b) for b in batches] == [100, 100, 50]


def test_byte_limit_splits_before_it_is_exceeded():
    limit = 5 * 1024 * 1024
    doc = entry_size(400 * 1024, "INV-1")  # a 300 KB document is about 400 KB in Base64
    batches = _pack([(f"N{i}", doc) for i in range(30)], max_bytes=limit)
    assert all(ENVELOPE_OVERHEAD + sum(size for _, size in b) <= limit for b in batches)
    assert sum(len(b) for b in batches) == 30 and len(batches) == 3


def test_the_same_number_never_shares_a_submission_and_order_is_kept():
    batches = _pack([("A", 1), ("B", 1), ("A", 1), ("C", 1)])
    assert [[k for k, _ in b] for b in batches] == [["A", "B", "C"], ["A"]]


def test_entry_size_counts_the_json_around_a_document():
    import json

    entry = {"format": "JSON", "documentHash": "a" * 64, "codeNumber": "INV-77", "document": "QUJD" * 10}
    assert entry_size(40, "INV-77") >= len(json.dumps(entry, separators=(",", ":"))) + 1


def test_a_batch_is_full_at_the_document_limit_or_when_a_largest_document_might_not_fit():
    def full(batch, largest=400 * 1024):
        return is_full(batch, size_of=lambda i: i[1], max_documents=100, max_bytes=5 * 1024 * 1024, largest_item=largest)

    assert full([(f"N{i}", 1000) for i in range(100)])
    assert not full([(f"N{i}", 1000) for i in range(99)])
    # Twelve 400 KB entries leave 0.3 MB: a thirteenth of up to 400 KB might not fit.
    big = [(f"N{i}", 400 * 1024) for i in range(12)]
    assert full(big)
    assert not full(big[:11])
