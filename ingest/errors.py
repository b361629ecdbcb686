"""Errors a user's input can cause: each says what was wrong and where (file, layer, feature)."""

from __future__ import annotations


class IngestError(Exception):
    """The whole input is unusable or was refused; nothing was written."""


class RejectedFeatures(IngestError):
    """Some features failed validation and rejects are not allowed: nothing was written."""

    def __init__(self, source: str, layer: str, rejects: list[tuple[int, str]], shown: int = 20) -> None:
        self.source = source
        self.layer = layer
        self.rejects = sorted(rejects)
        lines = [f"  feature {row}: {reason}" for row, reason in self.rejects[:shown]]
        more = len(self.rejects) - shown
        if more > 0:
            lines.append(f"  … and {more} more")
        super().__init__(
            f"{source} ({layer}): {len(self.rejects)} feature(s) rejected, nothing was loaded "
            f"(use --allow-rejects to load the others):\n" + "\n".join(lines)
        )
