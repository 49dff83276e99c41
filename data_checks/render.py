"""A validation report as one self-contained HTML page (inline CSS, no scripts, no links),
for MLflow's artifact viewer and for e-mail; the JSON report stays the source of truth."""

from __future__ import annotations

import html
import json
from typing import Any

from quantrec.data_checks.contract import FIXES, CheckResult, ValidationReport

_STYLE = """
body{font-family:system-ui,sans-serif;margin:1.5rem;color:#222}
p.summary{max-width:60rem;line-height:1.4}
.badge{display:inline-block;padding:.2rem .6rem;border-radius:.3rem;color:#fff;font-weight:600}
.pass{background:#2e7d32}.fail{background:#c62828}
table{border-collapse:collapse;font-size:.9rem;width:100%}
th,td{border:1px solid #ccc;padding:.3rem .5rem;text-align:left;vertical-align:top}
tr.failed td{background:#fdecea}
code{font-size:.85rem;white-space:pre-wrap;word-break:break-all}
"""


def report_html(report: ValidationReport) -> str:
    """The report as an HTML document: verdict, summary paragraph, then one row per check
    (failed checks first) with its column, observed and expected values and the fix."""
    verdict = "pass" if report.passed else "fail"
    title = f"Validation of {report.source}" + (f" ({report.day})" if report.day else "")
    ordered = sorted(report.checks, key=lambda c: c.passed)
    rows = "\n".join(_row(c) for c in ordered)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{_e(title)}</title>
<style>{_STYLE}</style></head>
<body>
<h1>{_e(title)} <span class="badge {verdict}">{verdict.upper()}</span></h1>
<p class="summary">{_e(report.summary())}</p>
<p>{report.rows} rows; {len(report.failed())} of {len(report.checks)} checks failed.</p>
<table>
<thead><tr><th>status</th><th>check</th><th>column</th><th>observed</th><th>expected</th>
<th>fix</th></tr></thead>
<tbody>
{rows}
</tbody></table>
</body></html>
"""


def _row(check: CheckResult) -> str:
    status = "pass" if check.passed else "FAIL"
    fix = "" if check.passed else FIXES.get(check.name, "")
    css = "" if check.passed else ' class="failed"'
    return (
        f"<tr{css}><td>{status}</td><td>{_e(check.name)}</td><td>{_e(check.column or '')}</td>"
        f"<td><code>{_e(_json(check.observed))}</code></td>"
        f"<td><code>{_e(_json(check.expected))}</code></td><td>{_e(fix)}</td></tr>"
    )


def _json(value: Any) -> str:
    try:
        return json.dumps(value, default=str)
    except (TypeError, ValueError):
        return str(value)


def _e(text: str) -> str:
    return html.escape(str(text), quote=True)
