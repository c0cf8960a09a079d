"""`moeisr cache migrate PATH [--data-root DIR]` and `moeisr cache info PATH`: the evaluation cache's upkeep."""

from __future__ import annotations

from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="inspect or migrate an evaluation cache (results.jsonl)",
        description=(
            "migrate: rewrite a cache of format 1 (rows keyed without the image's content hash, the protocol "
            "and the precision) in the current key format, hashing each row's HR file under the data root. "
            "info: rows, models and key formats of a cache."
        ),
    )
    parser.add_argument("action", choices=["migrate", "info"], help="what to do")
    parser.add_argument("path", type=Path, metavar="PATH", help="the cache file, e.g. runs/cache/cpu/results.jsonl")
    parser.add_argument(
        "--data-root",
        type=Path,
        default=None,
        help="data root of the rows' images (default: MOEISR_DATA or ../shared/data)",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    from moeisr.errors import UserError
    from moeisr.evaluate.cache import ResultsCache, migrate_legacy_rows

    if not args.path.is_file():
        raise UserError(f"{args.path}: no such cache file")
    if args.action == "migrate":
        migrated, dropped = migrate_legacy_rows(args.path, args.data_root)
        print(f"{args.path}: {migrated} row(s) migrated, {dropped} dropped (image not under the data root)")
        return 0
    frame = ResultsCache(args.path).load()
    print(f"{args.path}: {len(frame)} rows")
    if len(frame):
        counts = frame.groupby(["model", "protocol", "precision"]).size().rename("rows")
        print(counts.to_string())
    return 0
