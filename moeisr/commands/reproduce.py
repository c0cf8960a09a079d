"""`moeisr reproduce [--profile smoke|cpu|paper] [--retrain] [--stages train,eval,report] ...`."""

from __future__ import annotations

import argparse

from moeisr.commands.arguments import add_pipeline_arguments, csv_list, pipeline_options, scale_list


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "reproduce",
        help="train or reuse every model, evaluate the grid, regenerate tables, figures and REPORT.md",
        description=(
            "The main job: LIIF, LTE, MoEISR over each, and each backbone fine-tuned for MoEISR's budget. Bundled "
            "checkpoints (RESULTS/checkpoints/<experiment>.pt) are reused when their config hash matches, else the "
            "experiment is trained (resuming RUNS/<profile>/<experiment>); the evaluation cache makes re-runs compute "
            "only what is missing. Writes RESULTS/main.csv, tables/, figures/, REPORT.md and timings.json."
        ),
    )
    add_pipeline_arguments(
        parser,
        stages_from="moeisr.pipeline.reproduce",
        stage_names="train,eval,report",
        overrides_help="override a spec key of every experiment, e.g. --set eval.limit=2 (hashed keys change the "
        "config hash)",
        retrain_help="ignore the bundled checkpoints: train into the runs folder (a finished or interrupted run "
        "there is used; move it away to start over)",
    )
    parser.add_argument(
        "--large-scales",
        type=scale_list("--large-scales", "18,24,30", allow_none=True),
        default=None,
        metavar="S,S,...|none",
        help="extra scales on sets whose images are large enough (default: 18,24,30 for paper, none otherwise)",
    )
    parser.add_argument(
        "--models",
        type=csv_list,
        default=None,
        metavar="M,M,...",
        help="train and evaluate only these models (names of the model column, e.g. liif, moeisr-lte, lte-d1, "
        "lm-lte, moeisr-liif-v2-seed1; an unknown name lists them all) and the ones they start from, e.g. one job per "
        "model sharing --cache; with --stages train,eval, then run --stages report once all are done",
    )
    parser.add_argument(
        "--full",
        action="store_true",
        help="recompute every row from the checkpoints (into CACHE/full-<commit>.jsonl) instead of reusing the cache "
        "and recomputing a fixed sample (the default, 'verified' mode)",
    )
    parser.add_argument(
        "--seeds",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="also fine-tune MoEISR and the equal-budget controls with training seeds 1 and 2 from the same parents "
        "and evaluate them at x2-x4 (models moeisr-liif-v2-seed1, ...; the report's Seeds table and seed spread); "
        "on by default (their cpu checkpoints are committed), --no-seeds leaves them out",
    )
    parser.add_argument(
        "--plan",
        action="store_true",
        help="print what the train and eval stages would still compute (steps and rows left, per model) and about "
        "how long, from the bundles, run folders, timings.json and the cache; run nothing",
    )
    parser.set_defaults(func=run)


def run(args) -> int:
    if args.plan:
        from moeisr.pipeline.plan import make_plan, plan_text
        from moeisr.pipeline.reproduce import setup

        job = setup(
            args.profile, results=args.results, runs=args.runs, cache=args.cache, overrides=args.overrides or (),
            large_scales=args.large_scales, models=args.models, seeds=args.seeds,
        )  # fmt: skip
        print(f"moeisr reproduce --plan: profile {job.profile}, cache {job.paths.cache_file}")
        print(plan_text(make_plan(job)))
        return 0
    run_reproduce(
        large_scales=args.large_scales, models=args.models, full=args.full, seeds=args.seeds, **pipeline_options(args)
    )
    return 0


def run_reproduce(profile: str = "cpu", **options):
    """The main job: the pipeline's stages (`moeisr.pipeline.reproduce`), then, with the report stage, the one
    REPORT.md writer (`moeisr.report.render`); a failed reproduction check raises after the report is written."""
    from moeisr.artefacts import RECHECK_CSV
    from moeisr.errors import UserError
    from moeisr.evaluate import recheck
    from moeisr.pipeline.reproduce import STAGES, reproduce
    from moeisr.report.render import render_results

    result = reproduce(profile, **options)
    if "report" in options.get("stages", STAGES):
        render_results(result.paths.results, log=options.get("log", print))
    if result.recheck is not None and not bool(result.recheck["within"].all()):
        bad = result.recheck[~result.recheck["within"]]
        first = bad.iloc[0]
        raise UserError(
            f"reproduction check FAILED: {len(bad)} of {len(result.recheck)} recomputed rows differ from the cache "
            f"by more than {recheck.PSNR_TOLERANCE_DB} dB or in GFLOPs (first: {first['model']} "
            f"{first['dataset']}/{first['image']} x{first['scale']:g}, ΔPSNR {first['dpsnr']:+.4f} dB); see "
            f"{result.paths.results / RECHECK_CSV}"
        )
    return result
