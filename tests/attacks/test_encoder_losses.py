"""The three encoder-extraction losses (attacks/encoder_extraction.py) on hand-made embeddings."""

import numpy as np
import pytest
import torch

from attacks.encoder_extraction import LOSS_FUNCTIONS, EncoderExtractionSettings, cosine
from common.errors import ConfigError


@pytest.mark.parametrize("name", ["mse", "infonce", "softnn"])
def test_each_loss_prefers_the_victims_embedding_of_the_same_sample(name):
    """Matched pairs must score lower than the same embeddings paired with the wrong samples: catches a loss whose
    positives are not the diagonal (an off-by-one in the targets), a sign error, or a similarity that ignores
    which sample is which."""
    g = torch.Generator().manual_seed(0)
    victim = torch.randn(32, 16, generator=g)
    near = victim + 0.05 * torch.randn(32, 16, generator=g)
    shuffled = near[torch.randperm(32, generator=g)]
    loss = LOSS_FUNCTIONS[name]
    assert float(loss(near, victim, 0.1)) < float(loss(shuffled, victim, 0.1)) - 0.5
    if name == "mse":
        assert float(loss(victim, victim, 0.1)) == 0.0


def test_contrastive_losses_have_gradients_towards_the_victim():
    """One gradient step on the stolen embeddings brings them closer (cosine) to the victim's: catches a loss
    detached from its input or pushing the wrong way."""
    g = torch.Generator().manual_seed(1)
    victim = torch.randn(16, 8, generator=g)
    for name in ("infonce", "softnn"):
        stolen = torch.randn(16, 8, generator=g, requires_grad=True)
        before = cosine(stolen.detach().numpy(), victim.numpy())
        LOSS_FUNCTIONS[name](stolen, victim, 0.1).backward()
        after = cosine((stolen - 0.5 * stolen.grad).detach().numpy(), victim.numpy())
        assert after > before, name


def test_bad_settings_are_refused():
    with pytest.raises(ConfigError, match="unknown encoder-extraction loss 'l1'"):
        EncoderExtractionSettings(loss="l1")
    with pytest.raises(ConfigError, match="unknown surrogate"):
        EncoderExtractionSettings(surrogate="resnet999")
    assert cosine(np.eye(3), np.eye(3)) == pytest.approx(1.0)
