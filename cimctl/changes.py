"""``cim changes --from DATE --to DATE [--unit CODE]``: the yearly change survey's answer."""

from __future__ import annotations

from datetime import date, timedelta

import click

from cim.db import connect, ensure_database
from cim.store.history import building_changes
from cimctl.common import fail


@click.command("changes")
@click.option("--from", "start", required=True, help="First day (YYYY-MM-DD), included.")
@click.option("--to", "end", required=True, help="Last day (YYYY-MM-DD), included.")
@click.option("--unit", "unit_code", default=None, help="Only within this district/street/community/grid code.")
def changes(start: str, end: str, unit_code: str | None) -> None:
    """Buildings added, altered and demolished between two dates (local time, days inclusive)."""
    try:
        first, last = date.fromisoformat(start), date.fromisoformat(end)
    except ValueError:
        fail(f"--from/--to must be dates (YYYY-MM-DD), got {start!r} and {end!r}")
    if last < first:
        fail(f"--to {end} is before --from {start}")
    if unit_code is not None and not unit_code.isdigit():
        fail(f"--unit {unit_code!r} is not a unit code (digits)")
    ensure_database()
    with connect() as conn:
        rows = building_changes(
            conn,
            f"{first.isoformat()}T00:00:00+08:00",
            f"{(last + timedelta(days=1)).isoformat()}T00:00:00+08:00",
            unit_code,
        )
    counts = {kind: sum(1 for r in rows if r["change_type"] == kind) for kind in ("added", "altered", "demolished")}
    for row in rows:
        click.echo(
            f"{row['change_type']:<10} {row['building_code']}  v{row['version']}  "
            f"{row['changed_at'].date().isoformat()}  {row['use']:<11} {row['height_m']:.1f} m  {row['name'] or ''}"
        )
    click.echo(f"added {counts['added']}, altered {counts['altered']}, demolished {counts['demolished']}")
