"""Encoder-zoo defenses (router/defenses/embedding_noise.py, b4b.py) on hand-made embeddings."""

import numpy as np
import pytest

from common.errors import ConfigError
from router.defenses import check_combination, make_defense
from router.requirements import ZooModel
from router.zoo_view import ZooView


def test_embedding_noise_is_relative_to_each_rows_scale():
    """Rows of scale 1 and 100 get noise of the same relative size: catches absolute noise (which would drown
    small embeddings and leave large ones untouched) and a sigma applied as a variance."""
    d = make_defense({"name": "embedding_noise", "sigma": 0.2})
    rng = np.random.default_rng(0)
    emb = rng.standard_normal((2000, 64)).astype(np.float32)
    emb[1000:] *= 100
    noisy, labels = d.perturb_output(emb, None, np.random.default_rng(1))
    assert labels is None and noisy.dtype == emb.dtype
    rms = np.linalg.norm(emb, axis=1, keepdims=True) / 8.0
    rel = (noisy - emb) / rms
    for half in (rel[:1000], rel[1000:]):
        assert half.std() == pytest.approx(0.2, rel=0.03)


def test_b4b_noise_grows_with_a_keys_coverage_and_keys_are_separate():
    """A key embedding one narrow cluster keeps near-clean answers; a key sweeping the space gets noisy ones; the
    first key's noise is not raised by the second's sweep. Catches a global (not per-key) coverage, coverage
    counted over queries instead of distinct buckets, and noise that does not depend on coverage."""
    d = make_defense({"name": "b4b", "hash_bits": 10, "beta": 6.0, "max_sigma": 1.0, "seed": 0})
    rng = np.random.default_rng(0)
    centre = rng.standard_normal(32)
    narrow = (centre + 0.05 * rng.standard_normal((500, 32))).astype(np.float32)
    sweep = rng.standard_normal((5000, 32)).astype(np.float32)
    # the hash is centred on the running mean of all traffic, so the sweep goes first here (the first key
    # served sets the early centre: a known weakness, in the README)
    for i in range(0, 5000, 50):
        _, attacker = d.perturb_client_output("attacker", sweep[i : i + 50])
    for i in range(0, 500, 50):
        _, benign = d.perturb_client_output("benign", narrow[i : i + 50])
    for i in range(0, 2000, 50):
        d.perturb_client_output("attacker", sweep[i : i + 50])
    _, benign_after = d.perturb_client_output("benign", narrow[:50])
    assert benign["b4b_coverage"] < 0.02 and attacker["b4b_coverage"] > 0.5
    assert benign_after["b4b_sigma"] == benign["b4b_sigma"] < 0.01 < 0.3 < attacker["b4b_sigma"] <= 1.0
    noisy, _ = d.perturb_client_output("attacker", sweep[:200])
    rms = np.linalg.norm(sweep[:200], axis=1, keepdims=True) / np.sqrt(32)
    assert ((noisy - sweep[:200]) / rms).std() == pytest.approx(d.sigma(d.coverage("attacker")), rel=0.1)
    assert d.sigma(0.0) == 0.0 and d.sigma(1.0) == pytest.approx(1.0)


def test_embedding_defenses_are_refused_on_classifier_zoos():
    classifiers = ZooView((ZooModel("a", 0.6, 1.0),), 40, 10)
    for spec in ({"name": "embedding_noise"}, {"name": "b4b"}):
        with pytest.raises(ConfigError, match="perturbs embeddings"):
            check_combination([make_defense(spec)], classifiers)
    with pytest.raises(ConfigError, match="hash_bits"):
        make_defense({"name": "b4b", "hash_bits": 40})


def test_b4b_noise_follows_the_routers_seed_tree_and_projections_its_own_seed():
    """Catches B4B drawing its noise from its own fixed seed (every worker and every deployment the same noise,
    predictable from the public code) and projections that differ between workers (coverage shared through a
    store would then count different buckets)."""
    emb = np.random.default_rng(0).standard_normal((200, 16)).astype(np.float32)

    def answers(stream_seed):
        d = make_defense({"name": "b4b", "hash_bits": 1, "beta": 1.0, "max_sigma": 0.5, "seed": 3})
        d.use_noise_stream(np.random.default_rng(stream_seed))
        out, _ = d.perturb_client_output("k", emb)
        return out, d._planes

    a, planes_a = answers(1)
    again, _ = answers(1)
    b, planes_b = answers(2)
    assert np.array_equal(a, again) and not np.array_equal(a, b)
    assert np.array_equal(planes_a, planes_b)
