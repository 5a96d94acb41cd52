"""Conversation types and readers that report file and line on bad input."""

from rbr.data.io import (
    atomic_output,
    iter_rows,
    parse_record,
    read_records,
    write_jsonl,
)
from rbr.data.types import Message, Record, Sample, last_user_message, prompt_hash

__all__ = [
    "Message",
    "Record",
    "Sample",
    "atomic_output",
    "iter_rows",
    "last_user_message",
    "parse_record",
    "prompt_hash",
    "read_records",
    "write_jsonl",
]
