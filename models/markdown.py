"""Markdown tables that read as tables in MLflow's and Prefect's renderers.

MLflow's registry renders a table without cell padding, so the widest cell of a column
touches the next one ("0.8718540.786622"): every cell but the last of a row ends in two
no-break spaces, kept by a zero-width space after them (both renderers trim whitespace at a
cell's ends, and Prefect's shows an ``&nbsp;`` entity as text).
"""

from __future__ import annotations

from collections.abc import Sequence

GAP = "\u00a0\u00a0\u200b"


def table(header: Sequence[str], rows: Sequence[Sequence[object]], *, right: int = 0) -> list[str]:
    """Markdown lines: a blank line, the header, the alignment row and one line per row;
    the last ``right`` columns (numbers) are right-aligned."""
    width = len(header)
    align = ["---"] * (width - right) + ["---:"] * right
    return [
        "",
        _row(header),
        "|" + "|".join(align) + "|",
        *(_row([str(cell) for cell in row]) for row in rows),
        "",
    ]


def _row(cells: Sequence[str]) -> str:
    padded = [f"{cell}{GAP}" for cell in cells[:-1]] + [str(cells[-1])]
    return "| " + " | ".join(padded) + " |"


def escape_markdown(text: str) -> str:
    """``text`` shown as written: names such as ``cat_1`` or ``users_new`` keep their
    underscores instead of turning the words between them italic."""
    return "".join("\\" + c if c in "\\`*_[]|" else c for c in str(text))
