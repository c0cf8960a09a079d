"""`moeisr cache migrate|info|seal PATH [--data-root DIR]`: the evaluation cache's upkeep."""

from __future__ import annotations

from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "cache",
        help="inspect, migrate or seal an evaluation cache (results.jsonl)",
        description=(
            "migrate: rewrite a cache of format 1 (rows keyed without the image's content hash, the protocol "
            "and the precision) in the current key format, hashing each row's HR file under the data root. "
            "info: rows, models and key formats of a cache. seal: fold the file's rows into PATH.gz (read-only, "
            "gzip, read as part of the cache) and remove the file; run it when no job is writing to the cache."
        ),
    )
    parser.add_argument("action", choices=["migrate", "info", "seal"], help="what to do")
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

    cache = ResultsCache(args.path)
    readable = args.path.is_file() or (args.action != "migrate" and cache.sealed_path.is_file())
    if not readable:  # migrate rewrites the plain file only
        raise UserError(f"{args.path}: no such cache file")
    if args.action == "seal":
        print(f"{cache.sealed_path}: {cache.seal()} rows sealed; {args.path} removed")
        return 0
    if args.action == "migrate":
        migrated, dropped = migrate_legacy_rows(args.path, args.data_root)
        print(f"{args.path}: {migrated} row(s) migrated, {dropped} dropped (image not under the data root)")
        return 0
    frame = cache.load()
    print(f"{args.path}: {len(frame)} rows")
    if len(frame):
        counts = frame.groupby(["model", "protocol", "precision"]).size().rename("rows")
        print(counts.to_string())
    return 0
