"""SimCLR's views for MNIST-1D and whether training on them teaches the encoder anything random weights lack."""

import numpy as np
import torch

from zoo.architectures import build_model
from zoo.data import load_dataset
from zoo.ssl import SSLSettings, augment, embed, fit_probe, train_simclr

WEAK = dict(stretch_range=(1.0, 1.0), shear_std=0.0, correlated_noise_std=0.0, max_shift_fraction=0.1,
            noise_std=0.1)  # the first set of views psml shipped: shift, scale and white noise only


def test_shift_only_views_are_circular_shifts_of_their_own_sample():
    """Every other transformation switched off, a view must be its own sample rolled by at most 25% of the
    length. Catches a shift that mixes samples of the batch, a non-circular shift, and a stretch or shear that
    cannot be switched off."""
    x = torch.from_numpy(np.random.default_rng(0).standard_normal((16, 40)).astype(np.float32))
    s = SSLSettings(epochs=1, stretch_range=(1.0, 1.0), scale_range=(1.0, 1.0), shear_std=0.0,
                    correlated_noise_std=0.0, noise_std=0.0)
    v = augment(x, (1, 40), s, torch.Generator().manual_seed(0), 1.0).numpy()
    for row, view in zip(x.numpy(), v):
        assert any(np.allclose(np.roll(row, k), view) for k in range(-10, 11))
    assert not np.allclose(v, x.numpy())  # something moved


def _gain(settings: dict) -> tuple[float, float]:
    data = load_dataset("mnist1d", 0, 4000)
    model = build_model("cnn_small", data.sample_shape, 64, seed=0)
    xtr, ytr, xte, yte = data.x["victim_train"], data.y["victim_train"], data.x["test"], data.y["test"]
    untrained = fit_probe(embed(model, xtr), ytr).accuracy(embed(model, xte), yte)
    train_simclr(model, xtr, data.sample_shape, 64, SSLSettings(epochs=40, temperature=0.2, **settings))
    return fit_probe(embed(model, xtr), ytr).accuracy(embed(model, xte), yte), untrained


def test_simclr_on_mnist1d_views_beats_the_untrained_network():
    """A GAP CNN's random features already probe well on MNIST-1D, so an encoder counts as trained only when it
    beats its own initial weights under the same probe. With MNIST-1D's transformations (stretch, shift, scale,
    shear, correlated noise) cnn_small gains 18 points here (0.545 -> 0.725, 40 epochs on 2,000 samples); the
    weak views psml first shipped gain 5 (0.599), and this test holds them under 8, showing the margin of 12
    separates the two mechanisms."""
    trained, untrained = _gain({})
    assert trained > untrained + 0.12, (trained, untrained)
    weak, untrained_again = _gain(WEAK)
    assert untrained_again == untrained and weak < untrained + 0.08, (weak, untrained)
