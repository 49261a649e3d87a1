"""Output of the speed benchmarks: a fixed-width text table and a JSON file."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """Rows of dicts as a fixed-width text table; ``columns`` are (key, header); None prints empty."""
    cells = [[header for _, header in columns]]
    cells += [["" if row.get(key) is None else str(row.get(key)) for key, _ in columns] for row in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def write_json(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` as indented JSON to ``path`` (parents created) and say so."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(payload, indent=2) + "\n")
    print(f"wrote {path}")
