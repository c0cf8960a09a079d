"""`moeisr ablations [--profile smoke|cpu|paper] [--stages train,eval,sweep,report] [--rows a,b] ...`.

The pipeline's stages (`moeisr.pipeline.ablations`: train, eval, sweep, and the report stage's raw artefacts), then
the report renderer (`moeisr.report.ablations.render`) on what they wrote. Another suite file (`--suite`, e.g.
experiments/ablations/recipe.yaml) writes into RESULTS/ablations/<suite>/ and RESULTS/tables/ablations_<suite>.md;
a recipe suite's selection section is then also appended to RESULTS/tables/ablations.md (re-rendered when the main
suite has results).
"""

from __future__ import annotations

from pathlib import Path

from moeisr.commands.arguments import add_pipeline_arguments, csv_list, pipeline_options


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "ablations",
        help="the ablation suite: factor rows, the routing sweep, oracle and random routers (docs/ablations.md)",
        description=(
            "Rows of experiments/ablations/ablations.yaml, each the main MoEISR model with one factor changed, "
            "fine-tuned from the main job's trained backbone for the profile's shortened budget (reused by config "
            "hash, resumable); the controllable-routing sweep of the main MoEISR checkpoints with the oracle and "
            "random routers. Writes RESULTS/ablations/*.csv, RESULTS/tables/ablations.md, "
            "RESULTS/figures/ablations_*.png (the ablation section of RESULTS/REPORT.md is `moeisr reproduce`'s)."
        ),
    )
    add_pipeline_arguments(
        parser,
        stages_from="moeisr.pipeline.ablations",
        stage_names="train,eval,heldout,sweep,report",
        overrides_help="override a spec key of the main experiments and every row (before the ablation budget)",
        retrain_help="ignore the rows' bundled checkpoints",
    )
    parser.add_argument(
        "--rows",
        type=csv_list,
        default=None,
        metavar="ROW,ROW",
        help="rows to run, with their references and dense targets, in the suite file's order whatever the order "
        "given here (default: the profile's rows)",
    )
    parser.add_argument(
        "--suite",
        type=Path,
        default=None,
        help="suite file (default: experiments/ablations/ablations.yaml; another file, e.g. "
        "experiments/ablations/recipe.yaml, writes into RESULTS/ablations/<its stem>/)",
    )
    parser.add_argument(
        "--train-main", action="store_true", help="train the main job's checkpoints if missing (default: an error)"
    )
    parser.add_argument("--plan", action="store_true", help="print the rows and the time estimate; run nothing")
    parser.set_defaults(func=run)


def ablations(**options):
    """`run_ablations(**options)`, then, when its stages include the report and it did not only plan, the report
    renderer on the results folder. Returns (the pipeline's AblationResult, the files the renderer wrote)."""
    from moeisr.pipeline.ablations import STAGES, run_ablations
    from moeisr.report.ablations.render import read_raw, render

    result = run_ablations(**options)
    if "report" not in options.get("stages", STAGES) or options.get("plan_only"):
        return result, []
    log = options.get("log", print)
    results = result.paths.main.results
    written = render(results, command=options.get("command"), log=log, folder=result.paths.root)
    if result.paths.suite is not None and read_raw(results) is not None:
        # the main suite's tables/ablations.md ends with every recipe suite's selection section: re-render it
        written += render(results, log=log)
    return result, written


def run(args) -> int:
    ablations(
        rows=args.rows, suite=args.suite, train_main=args.train_main, plan_only=args.plan, **pipeline_options(args)
    )
    return 0
