"""The options of a ``kind = "jsonl"`` source: the ``[sources.NAME.options]`` table."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field


class JsonlSourceOptions(BaseModel):
    # A misspelt key in the TOML file is reported at start-up instead of being ignored.
    model_config = ConfigDict(extra="forbid")

    invoices: Path = Field(description="JSON-lines file the ERP writes: one canonical invoice per line.")
    results: Path = Field(description="JSON-lines file outcomes are appended to (created if missing).")
