"""Bounded random-access reads of a file, so that no parser can read a whole large file."""

from __future__ import annotations

import os
from typing import BinaryIO

#: The most bytes one inspection may read; index structures of valid inputs need far less.
READ_BUDGET = 32 * 1024 * 1024
#: The most boxes, elements, segments or chunks one inspection may visit. A 30 s clip cut into a
#: fragment per frame needs ~20,000; the cap keeps a file of millions of tiny elements cheap.
ELEMENT_BUDGET = 100_000


class ParseError(Exception):
    """A file's structure could not be read; turned into ``MediaValidationError`` by the caller."""

    def __init__(self, rule: str, detail: str) -> None:
        super().__init__(detail)
        self.rule = rule
        self.detail = detail


class BoundedReader:
    """Reads at offsets of an open binary file, counting bytes and elements against budgets."""

    def __init__(
        self, fh: BinaryIO, budget: int = READ_BUDGET, element_budget: int = ELEMENT_BUDGET
    ) -> None:
        self._fh = fh
        self.size = os.fstat(fh.fileno()).st_size
        self.bytes_read = 0
        self.elements = 0
        self._budget = budget
        self._element_budget = element_budget

    def count_element(self) -> None:
        """Count one visited structure; too many means a hostile or broken file, not a video."""
        self.elements += 1
        if self.elements > self._element_budget:
            raise ParseError(
                "element-budget",
                f"over {self._element_budget} header elements: the file is damaged, or too "
                "long to check from its headers",
            )

    def read_at(self, offset: int, length: int) -> bytes:
        """Up to ``length`` bytes at ``offset`` (fewer only at the end of the file)."""
        if offset < 0 or length < 0:
            raise ParseError("structure", f"negative offset or length ({offset}, {length})")
        length = max(0, min(length, self.size - offset))
        if self.bytes_read + length > self._budget:
            raise ParseError("structure", "index structures are implausibly large")
        try:
            self._fh.seek(offset)
            data = self._fh.read(length)
        except OSError as exc:
            raise ParseError("unreadable", f"read failed: {exc.strerror or exc}") from exc
        self.bytes_read += len(data)
        return data

    def read_exact(self, offset: int, length: int) -> bytes:
        """Exactly ``length`` bytes at ``offset``, or a truncation error."""
        data = self.read_at(offset, length)
        if len(data) != length:
            raise ParseError("truncated", f"file ends inside a structure at byte {offset}")
        return data

    def close(self) -> None:
        """Close the file."""
        self._fh.close()
