"""The memory estimate that refuses sizes which cannot fit: below what training really takes,
above the model's own weights and their optimizer state, and a one-line refusal."""

import re
import subprocess
import sys
import textwrap

import pytest

from experiments import memory, models
from experiments.config import ConfigError
from experiments.presets import PRESETS
from tests.conftest import tiny

SIZES = {"train": 4000, "val": 1000, "test": 1000}  # mnist-5k's splits


@pytest.mark.parametrize("name", ["vae", "sparse_kl", "ncae"])
def test_estimate_holds_the_models_weights_gradients_and_optimizer_state(name):
    cfg = tiny(name)
    weights = models.build(cfg).count_params()
    few = {"train": 10, "val": 10, "test": 10}  # so that the weights outweigh the activations
    for slots in (1, 3):
        packs = 1 if name == "vae" else slots  # the VAE trains alone
        assert memory.needed_bytes(cfg, few, slots) >= 4 * 4 * weights * packs


def test_every_preset_fits_and_a_huge_code_is_refused_in_one_line(monkeypatch):
    for cfg in PRESETS.values():
        memory.check(cfg, SIZES, slots=8)  # the notebooks' sizes, on any machine running the tests
    monkeypatch.setattr(memory, "available_bytes", lambda: 16 * 2**30)
    huge = PRESETS["ae"].replace(**{"model.latent": 10**8})
    with pytest.raises(ConfigError) as refused:
        memory.check(huge, SIZES, slots=8, processes=2)
    message = str(refused.value)
    assert message.startswith(
        "model.latent=100000000 does not fit in memory: training needs at least "
    ) and message.endswith(", 16.0 GiB is available")
    # 2 workers x 8 slots x 2 x 784 x 10^8 weights, 4 floats each: 36.5 TiB, plus activations
    assert 36.5 <= float(re.search(r"at least ([0-9.]+) TiB", message)[1]) < 60
    assert "8 trials per pack in each of 2 workers" in message and "\n" not in message


@pytest.mark.slow
def test_training_takes_at_least_the_estimate(tiny_npz):
    # peak resident memory of a real training, beyond what the process held before it
    script = textwrap.dedent(f"""
        import resource
        from experiments import data, memory
        from experiments.packed import PackedTrainer
        from experiments.presets import PRESETS
        d = data.load({tiny_npz!r})
        cfg = PRESETS["sparse_kl"].replace(**{{"model.latent": 30000, "train.epochs": 1}})
        held = int(open("/proc/self/statm").read().split()[1]) * resource.getpagesize()
        trainer = PackedTrainer(cfg, d, 2)
        for slot in (0, 1):
            trainer.assign(slot, cfg.replace(**{{"train.seed": slot}}))
        trainer.run(lambda results: None)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(peak - held, memory.needed_bytes(cfg, d.sizes(), 2))
    """)
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=600, check=True
    )
    used, estimate = map(int, done.stdout.split()[-2:])
    # the weights dominate: 2 slots x 2 x 784 x 30000 floats, 4 states of 4 bytes (1.4 GiB)
    assert estimate > 1.4 * 2**30
    assert estimate <= used < 3 * estimate, used / estimate  # a lower bound, not a loose one
