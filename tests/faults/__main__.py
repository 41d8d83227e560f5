"""Print the fault table: ``python -m tests.faults [SCENARIO ...]`` (``make faults``).

Runs each scenario (all by default) against a throwaway PostgreSQL cluster and prints one markdown
row per fault, then the whole table. Exit status 1 if a scenario lost or doubled a message.
"""

from __future__ import annotations

import argparse
import asyncio
import subprocess
import sys
import time
from pathlib import Path

from tests.faults.harness import Row, markdown_table
from tests.faults.scenarios import SCENARIOS
from tests.throwaway import ThrowawayPostgres


def _commit() -> str:
    try:
        root = Path(__file__).resolve().parents[2]
        out = subprocess.run(["git", "-C", str(root), "describe", "--always", "--dirty"], capture_output=True, text=True, timeout=10)
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


async def run_all(names: list[str]) -> list[Row]:
    rows: list[Row] = []
    with ThrowawayPostgres() as pg:
        for name in names:
            began = time.monotonic()
            try:
                row = await SCENARIOS[name](pg)
            except Exception as exc:  # noqa: BLE001 - one broken scenario must not hide the others' rows
                row = Row(name, 0, 0, 0, 0, 0, 0, None, note=f"scenario failed: {type(exc).__name__}: {exc}"[:300])
            rows.append(row)
            print(f"[{time.monotonic() - began:5.1f} s] " + " | ".join(row.cells()), file=sys.stderr, flush=True)
            if not pg.running():  # a scenario that stopped the cluster and failed before starting it again
                await asyncio.to_thread(pg.start)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.faults", description=__doc__.splitlines()[0])
    parser.add_argument("scenarios", nargs="*", metavar="SCENARIO", help=f"which to run (default: all): {', '.join(SCENARIOS)}")
    args = parser.parse_args(argv)
    unknown = [n for n in args.scenarios if n not in SCENARIOS]
    if unknown:
        parser.error(f"unknown scenario {unknown[0]!r}; choose from {', '.join(SCENARIOS)}")
    names = args.scenarios or list(SCENARIOS)
    began = time.monotonic()
    rows = asyncio.run(run_all(names))
    print(f"Faults against `personae run` (commit {_commit()}, {time.monotonic() - began:.0f} s in all):\n")
    print(markdown_table(rows))
    return 1 if any(r.lost or r.twice or r.sent == 0 for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
