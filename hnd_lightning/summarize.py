"""Write the summary of a sweep again: `python -m hnd_lightning.summarize SWEEP_DIR`.

Reads every job's results.json under SWEEP_DIR (the `hydra.sweep.dir` of a multirun) and writes
summary.csv, summary.md and summary.png there, as the sweep's Hydra callback does when it ends.
Exits with status 1 when a job failed or has no results yet.
"""

from __future__ import annotations

import argparse
import sys

from hnd_lightning.runs.sweep import write_summary
from hnd_lightning.runs.sweep_rows import unfinished

EXAMPLES = """examples:
  python -m hnd_lightning.summarize outputs/multiruns/2026-01-01/12-00-00
  # a sweep run with hydra.sweep.dir=outputs/multiruns/hnd_b, e.g. while its jobs still run:
  python -m hnd_lightning.summarize outputs/multiruns/hnd_b

Manual: docs/ in the repository (read it with mkdocs serve); this command: Reference > Command options > summarize."""


def build_parser() -> argparse.ArgumentParser:
    """The command line of `summarize` (one positional argument: the sweep directory)."""
    parser = argparse.ArgumentParser(
        prog="python -m hnd_lightning.summarize",
        description=__doc__,
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("sweep_dir", help="the sweep directory, e.g. outputs/multiruns/2026-01-01/12-00-00")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        summary = write_summary(args.sweep_dir)
    except FileNotFoundError as error:
        print(error, file=sys.stderr)
        return 2
    print(summary["markdown"].read_text())
    print(f"Wrote {summary['csv']}, {summary['markdown']} and {summary['plot']}")
    failed = unfinished(summary["rows"])
    if failed:
        print(
            f"{len(failed)} of {len(summary['rows'])} jobs did not finish: {', '.join(r['job'] for r in failed)}",
            file=sys.stderr,
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
