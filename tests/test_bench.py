"""The bench harness's arithmetic: ratios taken round by round, and the table built from them.
The README's figures come from this code, so a slip here would misreport every target."""

from __future__ import annotations

import importlib.util
import math
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parent.parent / "bench"


def load(name: str) -> ModuleType:
    """A bench script as a module (its neighbours, loadgen.py, common.py, importable)."""
    sys.path.insert(0, str(BENCH))
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCH / f"{name}.py")
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load("run")


@pytest.fixture(scope="module")
def paths() -> ModuleType:
    return load("paths")


def test_paired_is_the_median_of_ratios_within_each_round(bench: ModuleType) -> None:
    # round by round 2.0, 3.0, 1.5: the median is 2.0; the ratio of totals (11 / 4.5) is not
    assert bench.paired([2.0, 3.0, 6.0], [1.0, 1.0, 4.0]) == 2.0
    assert bench.paired([1.0, 2.0], [0.0, 1.0]) == 2.0  # a round the floor did not run is skipped
    assert math.isnan(bench.paired([1.0], [0.0]))


def _target(rps: list[float], cpu: list[float], **more: Any) -> dict[str, Any]:
    throughput = {"rps": sorted(rps)[len(rps) // 2], "rounds": rps, "cpu_ms_rounds": cpu}
    return {
        "throughput": throughput,
        "cpu_ms_per_request": sum(cpu) / len(cpu),
        "latency": {"p50": 1.0, "p99": 2.0},
        "ttft": {"p50": 1.0, "p99": 2.0},
        "streams": {"stalled": 0, "streams": 512},
        "rss_idle_mib": 40.0,
        "rss_load_mib": 50.0,
        "rss_after_mib": 50.0,
        **more,
    }


def test_the_table_reports_round_by_round_ratios_and_their_spread(bench: ModuleType) -> None:
    floor = _target([1000.0, 600.0, 1000.0], [0.2, 0.4, 0.2])
    results = {
        "targets": {
            "direct": _target([4000.0] * 3, [0.0] * 3),
            "floor": floor,
            # the machine slowed down in round 2, for all alike; medians of totals would give
            # 780 / 1000 = 0.78x and CPU 0.34 / 0.267 = 1.27x
            "pirouter": _target([800.0, 540.0, 780.0], [0.26, 0.52, 0.24]),
            "pirouter_no_ledger": _target([950.0, 570.0, 950.0], [0.22, 0.44, 0.22]),
            "pirouter_no_metrics": _target([820.0, 550.0, 800.0], [0.25, 0.5, 0.24]),
        },
        "startup": {
            "rss_idle_floor_mib": 52.0,
            "help_floor_ms": 90.0,
            "help_ms": 100.0,
            "route_floor_ms": 200.0,
            "route_ms": 220.0,
            "first_200_floor_ms": 400.0,
            "first_200_ms": 440.0,
        },
    }
    text = bench.table(results)
    rows = {line[:31].strip(): line.split() for line in text.splitlines()}
    assert rows["throughput req/s (c=32)"][-3] == "0.80x"  # rounds: 0.8, 0.9, 0.78
    assert rows["CPU ms per request"][-3] == "1.30x"  # rounds: 1.3, 1.3, 1.2
    assert "CPU per request vs floor, round by round: 1.20x to 1.30x over 3 rounds" in text
    assert "throughput vs floor, round by round: 0.78x to 0.90x over 3 rounds" in text
    assert "ledger on vs off: +18.8% throughput without it" in text  # 950/800, 570/540, 950/780


def _side(rps: list[float], cpu: list[float]) -> dict[str, Any]:
    return {"rounds": rps, "cpu_ms_rounds": cpu, "errors": 0}


def test_each_inbound_path_is_reported_against_its_own_floor_round_by_round(
    paths: ModuleType,
) -> None:
    # the floor slowed down in round 2 for both; a ratio of medians would say 0.30 / 0.20 = 1.5x
    measured = {
        label: {
            "whole": {
                "floor": _side([1000.0, 500.0, 1000.0], [0.2, 0.4, 0.2]),
                "pirouter": _side([900.0, 400.0, 800.0], [0.24, 0.44, 0.30]),
            },
            "streamed": {"floor": _side([], []), "pirouter": _side([], [])},  # not run: no row
        }
        for label, _, _ in paths.PATHS
    }
    text = paths.paths_table(measured)
    lines = text.splitlines()
    rows = [line for line in lines[2:] if line.startswith(tuple(p[0] for p in paths.PATHS))]
    assert len(rows) == len(paths.PATHS)  # one row each, whole only
    for row in rows:
        # CPU round by round 1.2, 1.1, 1.5x; throughput 0.9, 0.8, 0.8x
        assert row.split()[-7:] == ["whole", "0.200", "0.300", "1.20x", "1000", "800", "0.80x"]
    assert "CPU per request <= 1.25x" in lines[-1]


def test_builds_names_every_inbound_path_the_load_generator_sends() -> None:
    """`bench/builds.py` A/Bs builds on the paths `run.py --paths` measures: each of its routes is
    one the load generator knows, to an upstream protocol the fake upstream speaks."""
    builds, loadgen = load("builds"), load("loadgen")
    assert {route for route, _ in builds.ROUTES.values()} == set(loadgen.ROUTES)
    assert {kind for _, kind in builds.ROUTES.values()} == {"openai", "anthropic", "ollama"}
