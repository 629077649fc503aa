"""Useful goodput: answered, within the client's SLO, labelled right (pure)."""

import numpy as np

from loadtests.useful import benign_answer, useful_goodput


def test_a_label_flipping_answer_is_served_but_not_useful():
    """Catches useful goodput that counts served answers (a defense flipping labels would look free) and one
    that ignores the client's own latency bound."""
    y = np.array([1, 2, 3, 4])
    answers = [benign_answer(y, y, 5.0, 10.0),  # all right, in time: 4 useful
               benign_answer(y, (y + 1) % 10, 5.0, 10.0),  # served in time, every label flipped: 0 useful
               benign_answer(y, y, 15.0, 10.0),  # right but late: 0 useful
               benign_answer(y, None, 1.0, None),  # refused: 0 useful
               benign_answer(y[:2], np.array([1, 9]), 50.0, None)]  # no bound, one of two right: 1 useful
    g = useful_goodput(answers)
    assert g["samples_sent"] == 18 and g["samples_answered"] == 14 and g["samples_useful"] == 5
    assert g["useful_goodput_share"] == 5 / 18 and g["label_accuracy"] == 9 / 14
    assert useful_goodput([])["useful_goodput_share"] is None
