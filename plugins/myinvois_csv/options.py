"""Settings of a ``kind = "csv"`` source."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field

from connector_core.model import Party


class CsvSourceOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    inbox: Path = Field(
        description="Folder the ERP drops invoice CSV files into. It must exist (unless seed_dir is set)."
    )
    archive: Path = Field(description="Folder processed files are moved to (created if missing).")
    outbox: Path = Field(description="CSV file results are appended to (created with a header if missing).")
    pattern: str = Field(
        default="*.csv",
        description="Which files of the inbox to read. Names ending in .part or .tmp, and names starting with a dot, never are.",
    )
    cancel_requests_pattern: str = Field(
        default="cancel-requests*.csv",
        description="Files of the inbox with the ERP's requests to cancel validated invoices (columns invoice_number, "
        "reason); never read as invoices.",
    )
    delimiter: str = Field(default=",", min_length=1, max_length=1, description="Column separator.")
    settle_seconds: float = Field(
        default=3.0,
        ge=0,
        description="A file is read only once it has not been modified for this long, so a file still being written "
        "is left for a later fetch; 0 reads every file at once.",
    )
    company: Party = Field(
        description="Your company: the supplier of invoices and notes, the buyer of self-billed documents. "
        "The other party comes from each row's party_* columns."
    )
    seed_dir: Path | None = Field(
        default=None,
        description="For demos and trials: CSV files copied into the inbox once (a marker file in the inbox records it).",
    )
