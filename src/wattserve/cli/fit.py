"""`wattserve fit`: PALS's throughput and power models fitted to a profile, cross-validated, and
written as predictions on a dense cap x batch grid for the `pals` controller."""

from __future__ import annotations

import argparse

from wattserve.cli.profile import add_command, parse, validate
from wattserve.errors import UsageError

DESCRIPTION = ("Fit regressors of an instance's throughput (output tokens/s) and power per GPU to a table from "
               "wattserve profile (features: GPU, model, TP, EP, cap, batch limit), score a random forest and "
               "gradient boosting by shuffled, seeded K-fold cross-validation (R^2 and MAPE per target), and "
               "write the chosen regressor's predictions on caps every 5 W x the profiled batches as JSON "
               "(format wattserve-pals-models/1). Needs scikit-learn (pip install 'wattserve[fit]'). The flags "
               "set fields of wattserve.schema.profile.FitConfig (PALS, arXiv 2605.21427: random forests).")
METAVARS = {"profile": "FILE", "out": "FILE", "regressor": "auto|random-forest|gradient-boosting"}


def add(sub: argparse._SubParsersAction) -> None:
    add_command(sub, "fit", "fit PALS's throughput and power models to a profile", DESCRIPTION, METAVARS, cmd_fit)


def cmd_fit(args: argparse.Namespace, started: float) -> int:
    from wattserve.experiments.fit import check_out, fit, write_models
    from wattserve.schema.profile import FitConfig

    args, flags = parse(args, "fit")
    cfg = validate(args, flags, FitConfig)
    try:
        assert cfg.out is not None
        check_out(cfg.out)
        doc = fit(cfg)
    except UsageError as e:
        raise e.named({f.path: f"--{f.name}" for f in flags}) from None
    write_models(doc, cfg.out)
    for name, scores in doc["cv"].items():
        mark = " (written)" if name == doc["regressor"] else ""
        print(f"{name}{mark}: " + "; ".join(f"{t} R^2 {s['r2']:.4f}, MAPE {100 * s['mape']:.2f}%"
                                            for t, s in scores.items()), flush=True)
    print(f"wrote {cfg.out}: {doc['rows']} rows, {len(doc['groups'])} groups, {cfg.folds}-fold CV", flush=True)
    return 0
