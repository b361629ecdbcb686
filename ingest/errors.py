"""Errors a user's input can cause: each says, on one line, what was wrong and where (file, layer,
feature). Longer detail (the other rejected features) is in ``details`` for the CLI to list below it."""

from __future__ import annotations


class IngestError(Exception):
    """The whole input is unusable or was refused; nothing was written."""

    details: tuple[str, ...] = ()


class RejectedFeatures(IngestError):
    """Some features failed validation and rejects are not allowed: nothing was written."""

    def __init__(
        self, source: str, layer: str, rejects: list[tuple[int, str]], unit: str = "feature", shown: int = 20
    ) -> None:
        self.source = source
        self.layer = layer
        self.rejects = sorted(rejects)
        row, reason = self.rejects[0]
        more = f" (and {len(self.rejects) - 1} more rejected)" if len(self.rejects) > 1 else ""
        super().__init__(
            f"{source} ({layer}) {unit} {row}: {reason}{more}; nothing was loaded "
            "(--allow-rejects loads the others)"
        )
        details = [f"{unit} {r}: {m}" for r, m in self.rejects[1 : shown + 1]]
        if len(self.rejects) > shown + 1:
            details.append(f"… and {len(self.rejects) - shown - 1} more")
        self.details = tuple(details)
