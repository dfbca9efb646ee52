"""The report's files for programs: ``trials.csv``, one row per trial, and ``summary.json``, the
winner, each family's, the baselines, the references and the cost of sparsity
(docs/summary-json.md)."""

from __future__ import annotations

import csv
import io
from collections import Counter

from optuna.trial import FrozenTrial, TrialState

from study import baselines, confirm
from study.report import comparison
from study.report.findings import Findings
from study.results import family, feasible
from study.storage import mask
from study.workers import FAIL_REASON


def _cell(value: object) -> str:
    return "" if value is None else repr(value) if isinstance(value, float) else str(value)


def trials_csv(trials: list[FrozenTrial]) -> str:
    """One row per trial: state, family, params, measures, constraint, timing, MLflow run id."""
    params = sorted({k for t in trials for k in t.params})
    measures = sorted(
        {
            k
            for t in trials
            for k, v in t.user_attrs.items()
            if isinstance(v, (int, float)) and not isinstance(v, bool)
        }
    )
    fields = [
        "number",
        "state",
        "fail_reason",
        "family",
        "value",
        "constraint",
        "feasible",
        *params,
        *measures,
        "last_step",
        "last_reported",
        "datetime_start",
        "datetime_complete",
        "duration_s",
        "mlflow_run_id",
    ]
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    for t in trials:
        constraint = next(iter(t.constraints.values())) if t.constraints else None
        writer.writerow(
            {
                "number": t.number,
                "state": t.state.name,
                "fail_reason": t.user_attrs.get(FAIL_REASON, ""),
                "family": family(t),
                "value": repr(t.value) if t.state == TrialState.COMPLETE else "",
                "constraint": "" if constraint is None else repr(constraint),
                "feasible": str(feasible(t)).lower() if t.constraints else "",
                **{k: _cell(t.params.get(k)) for k in params},
                **{k: _cell(t.user_attrs.get(k)) for k in measures},
                "last_step": _cell(t.last_step),
                # what the pruner compared at that step (see Objective.pruning_value)
                "last_reported": _cell(
                    None if t.last_step is None else t.intermediate_values.get(t.last_step)
                ),
                "datetime_start": t.datetime_start.isoformat() if t.datetime_start else "",
                "datetime_complete": t.datetime_complete.isoformat() if t.datetime_complete else "",
                "duration_s": f"{t.duration.total_seconds():.2f}" if t.duration else "",
                "mlflow_run_id": t.user_attrs.get("mlflow_run_id", ""),
            }
        )
    return buffer.getvalue()


def summary_json(f: Findings) -> dict:
    """The machine-readable summary: the winner (config, search and confirmed figures), each
    family's, the baselines, the references and the cost of sparsity."""

    def confirmed(c: confirm.Confirmed) -> dict:
        s, a = c.seeded, c.trial.user_attrs
        return {
            "trial": c.number,
            "family": family(c.trial),
            "config": c.config,
            "search": {
                "seed": c.config["train.seed"],
                "val_mse": a["val_mse"],
                "test_mse": a["test_mse"],
                "mean_activation": a["val_mean_activation"],
                "l0": a.get("val_l0"),
            },
            "confirmed": {
                "seeds": list(s.seeds),
                **{
                    f"{k}_{stat}": getattr(s, stat)(k)
                    for k in ("val_mse", "test_mse")
                    for stat in ("mean", "sd", "worst")
                },
                "mean_activation_mean": s.mean("val_mean_activation"),
                "mean_activation_worst": s.worst("val_mean_activation"),
                "l0_mean": s.mean("val_l0"),
                "test_fvu_mean": s.mean("test_fvu"),
                "decoder_norm_median_mean": s.mean("decoder_norm_median"),
            },
        }

    def baseline(b: baselines.Baseline) -> dict:
        s = b.seeded
        ok = all(s.finals)
        return {
            "name": b.name,
            "description": b.description,
            "learning_rate": b.learning_rate,
            "learning_rates_tried": [lr for lr, _ in b.grid],
            "seeds": list(s.seeds),
            "test_mse_mean": s.mean("test_mse") if ok else None,
            "test_mse_sd": s.sd("test_mse") if ok else None,
            "val_mse_mean": s.mean("val_mse") if ok else None,
            "mean_activation_mean": s.mean("val_mean_activation") if ok else None,
            "l0_mean": s.mean("val_l0") if ok else None,
        }

    states = Counter(t.state.name for t in f.trials)
    return {
        "study": f.study_name,
        "storage": mask(f.storage),
        "data": f.spec["data.name"],
        "constraint": {
            "measure": f.constraint.measure,
            "metric": f.constraint.metric,
            "target": f.constraint.target,
        },
        "trials": {
            "complete": states["COMPLETE"],
            "pruned": states["PRUNED"],
            "failed": states["FAIL"],
            "feasible": sum(
                feasible(t, f.constraint) for t in f.trials if t.state == TrialState.COMPLETE
            ),
        },
        "winner": confirmed(f.winner) if f.winner else None,
        "families": {fam: confirmed(c) for fam, c in f.winners.items()},
        "unconfirmed_candidates": [t.number for t in f.unconfirmed],
        "baselines": [baseline(b) for b in f.baselines.values()],
        "references": [
            {"name": r.name, "val_mse": r.val_mse, "test_mse": r.test_mse, "test_fvu": r.test_fvu}
            for r in f.references
        ],
        "cost_of_sparsity": comparison.cost(f.winner, f.baselines, f.references),
        "registered_model": f"models:/{f.registered}" if f.registered else None,
    }
