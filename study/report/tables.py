"""The report's tables: the confirmed configurations (with the commands that train them again)
and the comparison on the test split with the baselines, PCA and the mean image."""

from __future__ import annotations

import shlex

from experiments import presets
from study import baselines
from study.report import comparison
from study.report.document import Block, Code, Heading, Paragraph, Table
from study.report.findings import Findings
from study.report.numbers import num, pm, searched_values
from study.results import ROUNDS, family


def reproduce_command(config: dict[str, object]) -> str:
    """The `python -m experiments run` command that trains ``config`` again: its preset and the
    values that differ from it."""
    preset = str(config["name"]) if config.get("name") in presets.PRESETS else "ae"
    data, epochs = config["data.name"], config["train.epochs"]
    base = presets.get(preset).replace(**{"data.name": data, "train.epochs": epochs}).flat()
    args = [
        "python",
        "-m",
        "experiments",
        "run",
        preset,
        "--data",
        str(data),
        "--epochs",
        str(epochs),
    ]
    for key, value in config.items():
        if base.get(key) != value:
            args += ["--set", f"{key}={value!r}"]
    return shlex.join(args)


def cost_sentence(f: Findings) -> str | None:
    ratios = comparison.cost(f.winner, f.baselines, f.references)
    if ratios is None:
        return None
    return (
        f"Cost of sparsity: the confirmed winner's test MSE is {ratios['vs_dense']:.2f}× "
        f"the tuned dense autoencoder's, {ratios['vs_pca']:.2f}× PCA's and "
        f"{ratios['vs_mean_image']:.2f}× the mean image's (the dense autoencoder: "
        f"{ratios['dense_vs_pca']:.2f}× PCA's)."
    )


def confirmed_table(f: Findings) -> list[Block]:
    out: list[Block] = [Heading("Confirmed configurations")]
    if not f.confirmed:
        return out + [Paragraph("Nothing confirmed on fresh seeds yet:"), Code(f.confirm_command)]
    rows = []
    for c in sorted(
        f.confirmed, key=lambda c: (f.families.index(family(c.trial)), c.seeded.mean("val_mse"))
    ):
        mark = (
            " (winner)"
            if c is f.winner
            else (" (family winner)" if c in f.winners.values() else "")
        )
        rows.append(
            (
                family(c.trial) + mark,
                str(c.number),
                searched_values(c.config),
                num(c.trial.user_attrs["val_mse"]),
                pm(c, "val_mse"),
                pm(c, "test_mse"),
                num(c.seeded.worst("test_mse")),
                num(c.seeded.mean("val_mean_activation")),
                num(c.seeded.mean("val_l0"), 1),
                ("yes" if c.holds(f.constraint) else "no")
                + f" ({num(c.seeded.worst(f.constraint.metric))})",
            )
        )
    seed = f.spec["train.seed"]
    out += [
        Paragraph(
            f"The best feasible trials of each family in the search, trained again on fresh "
            f"seeds, a family's next ones joining while none holds (at most {ROUNDS} rounds "
            f"of `--confirm-top`); a configuration holds when its `{f.constraint.metric}` "
            f"meets the target on every seed (its worst seed in brackets), and the "
            f"family's winner is the one that holds with the lowest mean validation MSE. "
            f'"search" is the trial\'s own value on seed {seed}.'
        ),
        Table(
            (
                "family",
                "trial",
                "values",
                f"search val MSE (seed {seed})",
                "val MSE (mean ± sd)",
                "test MSE (mean ± sd)",
                "worst test MSE",
                "mean activation",
                "L0",
                "holds (worst seed)",
            ),
            tuple(rows),
        ),
    ]
    if f.winner is not None:
        commands = [
            f"# the winner (trial {f.winner.number}, {family(f.winner.trial)}); "
            f"--set train.seed=N for another seed",
            shlex.join(
                [
                    "python",
                    "-m",
                    "experiments",
                    "run",
                    "--config",
                    str(f.folder / "best_config.json"),
                ]
            ),
        ]
        for fam, c in f.winners.items():
            commands += [f"# {fam} (trial {c.number})", reproduce_command(c.config)]
        out += [
            Paragraph(
                "Train one of them again as a tracked MLflow run (with the study's "
                "seed, on the same Keras backend, it repeats the trial up to float "
                "rounding; other seeds land around the confirmed mean):"
            ),
            Code("\n".join(commands)),
        ]
    return out


def comparison_table(f: Findings) -> list[Block]:
    rows = (
        comparison.winner_rows(f.winners, f.winner)
        + comparison.baseline_rows(f.baselines)
        + comparison.reference_rows(f.references)
    )
    table = Table(
        (
            "model",
            "how it was chosen",
            "val MSE",
            "test MSE",
            "test FVU",
            "mean activation",
            "L0",
            "active fraction",
            "Hoyer",
        ),
        tuple(
            (
                r.model,
                r.chosen,
                num(r.val_mse),
                num(r.test_mse) + (f" ± {num(r.test_mse_sd)}" if r.test_mse_sd is not None else ""),
                num(r.test["fvu"], 3),
                num(r.test["mean_activation"]),
                num(r.test["l0"], 1),
                num(r.test["active_fraction"], 2),
                num(r.test["hoyer"], 2),
            )
            for r in rows
        ),
    )
    s = f.spec
    grid = ", ".join(f"{lr:g}" for lr in baselines.lr_grid())
    blocks: list[Block] = [
        Heading("Comparison on the test split"),
        Paragraph(
            f"All rows are measured on the same {len(f.data.x_test):,} test images of "
            f"`{s['data.name']}` (the code measures on their codes). The presets train "
            f"with everything the trials share: data, epochs ({s['train.epochs']}), batch "
            f"size, code size ({s['model.latent']}) and activation, loss, optimizer, "
            f"penalty layers and decoder bound; only their family and penalty weights are "
            f"the preset's. Their learning rate is chosen from {grid} by the validation "
            f"MSE on the study's seed, then trained on the winners' fresh seeds (mean ± "
            f"sd). A model near the mean image has learned nothing."
        ),
    ]
    if not f.baselines:
        blocks.append(Paragraph(f"The baselines are not trained yet: `{f.confirm_command}`"))
    cost = cost_sentence(f)
    return blocks + [table] + ([Paragraph(cost)] if cost else [])
