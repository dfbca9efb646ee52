"""Config: flattening, overrides, validation, presets."""

import json

import pytest

from experiments import presets
from experiments.config import ConfigError, ExperimentConfig, from_flat, load_json, parse_override


def test_flat_round_trip_covers_every_field():
    cfg = presets.get("sparse_kl_wd")
    flat = cfg.flat()
    assert flat["model.beta"] == 3.0 and flat["model.weight_decay"] == 0.006
    assert from_flat(flat) == cfg
    assert from_flat(json.loads(cfg.to_json())) == cfg


def test_presets_match_the_seed_notes():
    assert presets.get("vae").model.latent == 2
    assert presets.get("ae").model.latent == 32
    assert presets.get("sparse_l1").model.l1 == 1e-7
    ncae = presets.get("ncae").model
    assert (ncae.p, ncae.beta, ncae.alpha) == (0.05, 3.0, 0.003)
    assert set(presets.NOTEBOOKS) == {"vae", "ae", "sparse_l1", "sparse_kl", "sparse_kl_wd", "ncae"}
    assert set(presets.PRESETS) == {*presets.NOTEBOOKS, "topk"}


@pytest.mark.parametrize(
    "text, expected",
    [
        ("model.beta=3", ("model.beta", 3)),
        ("model.activation=sigmoid", ("model.activation", "sigmoid")),
        ("model.activation='sigmoid'", ("model.activation", "sigmoid")),
        ("train.learning_rate=1e-2", ("train.learning_rate", 0.01)),
    ],
)
def test_parse_override(text, expected):
    assert parse_override(text) == expected


def test_int_is_accepted_for_float_fields():
    cfg = ExperimentConfig().replace(**{"model.family": "sparse_kl", "model.beta": 3})
    assert cfg.model.beta == 3.0 and isinstance(cfg.model.beta, float)


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"model.bogus": 1}, "unknown config key 'model.bogus'"),
        ({"model.latent": "32"}, "model.latent must be int"),
        ({"model.latent": 3.5}, "model.latent must be int"),
        ({"train.epochs": True}, "train.epochs must be int"),
        ({"model.family": "gan"}, "model.family must be one of"),
        ({"model.family": "sparse_kl", "model.beta": -1.0}, "model.beta must be >= 0"),
        ({"model.family": "sparse_l1", "model.l1": -1e-3}, "model.l1 must be >= 0"),
        ({"model.p": 0.0}, "model.p must be in (0, 1)"),
        ({"model.p": 1.0}, "model.p must be in (0, 1)"),
        ({"model.latent": 0}, "model.latent must be >= 1"),
        ({"train.epochs": 0}, "train.epochs must be >= 1"),
        ({"train.learning_rate": 0.0}, "train.learning_rate must be > 0"),
        ({"train.learning_rate": float("nan")}, "must be finite"),
        ({"data.val_fraction": 1.0}, "data.val_fraction must be in (0, 1)"),
        ({"model.beta": 3.0}, "model.beta has no effect on family 'ae'"),
        ({"model.family": "ncae", "model.weight_decay": 0.1}, "no effect on family 'ncae'"),
        ({"model.activation": "tanh"}, "model.activation must be one of"),
        ({"model.decoder_norm": -1.0}, "model.decoder_norm must be >= 0"),
        ({"model.family": "vae", "model.decoder_norm": 1.0}, "no effect on the vae"),
        (
            {"model.family": "topk", "model.k": 0},
            "model.k must be in 1 … model.latent (32) for topk, got 0",
        ),
        ({"model.family": "topk", "model.k": 33}, "model.k must be in 1 … model.latent (32)"),
        ({"model.k": 4}, "model.k has no effect on family 'ae'"),
    ],
)
def test_bad_values_raise_one_line_errors(overrides, message):
    with pytest.raises(ConfigError) as err:
        ExperimentConfig().replace(**overrides)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown experiment 'gan'; known: vae, ae"):
        presets.get("gan")


def test_load_json_errors(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="not valid JSON"):
        load_json(bad)
    with pytest.raises(ConfigError, match="cannot read config"):
        load_json(tmp_path / "missing.json")
    bad.write_text("[1, 2]")
    with pytest.raises(ConfigError, match="JSON object"):
        load_json(bad)


def test_topk_takes_any_decoder_norm_and_ignores_it():
    # model.decoder_norm bounds the penalty families' decoders (0: unbounded); topk's columns are
    # always at unit norm (tests/test_topk.py), so a study's one value suits every family
    for norm in (0.0, 1.0, 28.0):
        cfg = ExperimentConfig().replace(
            **{"model.family": "topk", "model.k": 4, "model.decoder_norm": norm}
        )
        assert cfg.model.decoder_norm == norm
    topk, ae = presets.PRESETS["topk"].flat(), presets.PRESETS["ae"].flat()
    assert "model.decoder_norm" not in {k for k, v in topk.items() if v != ae[k]}
