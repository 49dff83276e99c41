"""The exchange benchmark: its rate parsing, and (slow) a small run over loopback."""

from __future__ import annotations

import json

import pytest

from quantrec.benchmarks.exchange import VARIANTS, _rate_bits, main
from quantrec.benchmarks.options import EXCHANGE_VARIANTS, BenchmarkOptionsError, ExchangeOptions


def test_rates_are_read_in_tc_units() -> None:
    assert _rate_bits("100mbit") == 100_000_000
    assert _rate_bits("1gbit") == 1_000_000_000
    assert _rate_bits("2.5Mbit") == 2_500_000
    with pytest.raises(ValueError, match="kbit, mbit or gbit"):
        _rate_bits("100mbps")


@pytest.mark.slow
def test_a_small_run_over_loopback_prints_every_variant(capsys) -> None:
    argv = ["--rates", "loopback", "--rows-per-day", "3000", "--days", "1", "--steps", "3"]
    assert main([*argv, "--warmup", "1", "--batch-size", "256", "--json"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    two = {r["variant"]: r for r in rows if r["ranks"] == 2}
    assert set(two) == {"exact", "fixed 0.01", "dual-level"}
    one = [r for r in rows if r["ranks"] == 1]
    assert len(one) == 1 and one[0]["a2a_bytes_per_step"] == 0
    # 26 tables of D = 16, 256 rows: 8 D F B (W - 1) / W bytes in all, exact.
    assert two["exact"]["a2a_bytes_per_step"] == 8 * 16 * 26 * 256 // 2
    assert two["fixed 0.01"]["forward_ratio"] > 1
    assert two["fixed 0.01"]["a2a_bytes_per_step"] < two["exact"]["a2a_bytes_per_step"]


def test_the_cli_names_the_benchmarks_variants() -> None:
    assert tuple(VARIANTS) == EXCHANGE_VARIANTS
    with pytest.raises(BenchmarkOptionsError, match="unknown"):
        ExchangeOptions(variants=("fixed 0.5",))
