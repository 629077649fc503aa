"""benchmarks.encoder_defenses' settings: checked before any server starts, recorded under the result file's
names, and its benign clients' requests measured by the closed-loop core in order."""

import numpy as np
import pytest

from benchmarks.encoder_defenses import QUICK, QUICK_CONFIGS, EncoderDefenseSettings, embed_through, run
from common.errors import ConfigError


@pytest.mark.parametrize("bad", [{"configs": ("none", "no such defense")}, {"seeds": ()}, {"budget_samples": 0},
                                 {"batch_size": 0}])
def test_bad_settings_raise_a_sentence(bad):
    """Catches settings accepted silently (an unknown configuration found only after Triton started)."""
    with pytest.raises(ConfigError):
        EncoderDefenseSettings(**bad)


def test_run_refuses_settings_without_a_zoo():
    """Catches run falling back to some zoo when none was given."""
    with pytest.raises(ConfigError, match="encoder zoo"):
        run(QUICK)


def test_settings_are_recorded_under_the_result_file_s_names_with_none_first():
    """Catches a result whose settings changed names with the fields (budget_samples written as such, the
    report and older result files read ``budget``) or that leaves out the always-measured ``none``."""
    d = EncoderDefenseSettings(configs=("b4b 8 bits",), budget_samples=300).as_dict()
    assert list(d) == ["budget", "loss", "surrogate", "epochs", "narrow_classes", "benign_train", "benign_test",
                       "batch_size", "seeds", "configs"]
    assert d["budget"] == 300 and d["configs"] == ["none", "b4b 8 bits"]
    assert QUICK.configs == QUICK_CONFIGS and QUICK.as_dict()["benign_train"] == 100


class Embedder:
    def __init__(self, fail_at=None):
        self.sent, self.fail_at = [], fail_at

    def infer(self, x, **requirements):
        self.sent.append((len(x), requirements))
        if len(self.sent) == self.fail_at:
            raise RuntimeError("refused")
        return np.asarray(x)[:, :2] * 2


def test_embed_through_answers_every_sample_in_order_and_raises_a_failure():
    """Catches batches sent out of order (the probe would be fit on shuffled answers), the last partial batch
    dropped, a time per batch missing, or a failed request skipped instead of ending the client's run."""
    x, times = np.arange(14.0).reshape(7, 2), []
    client = Embedder()
    out = embed_through(client, x, 3, times, {"min_accuracy": 0.9})
    assert np.array_equal(out, x * 2) and [n for n, _ in client.sent] == [3, 3, 1] and len(times) == 3
    assert all(r == {"min_accuracy": 0.9} for _, r in client.sent)
    with pytest.raises(RuntimeError, match="refused"):
        embed_through(Embedder(fail_at=2), x, 3, [], {})
