"""The outcome contract: every router error declares its status, kind and audit outcome in router/errors.py."""

import inspect

from router import errors
from router.errors import Outcome, RouterError
from router.goodput import COUNTED


def _all_errors():
    return [c for _, c in inspect.getmembers(errors, inspect.isclass) if issubclass(c, RouterError)]


def test_every_error_declares_status_kind_and_an_outcome_that_fits_its_status():
    """Catches an error class added without an outcome (it would be audited as a bug, 'error'), a shed or
    refused answer without Retry-After where waiting helps, and outcomes drifting from their statuses."""
    classes = _all_errors()
    # each class that names its own kind names a new one (500s all say internal_error, a bug's details stay
    # inside; StateStoreReplyLost is an unavailable store to the client, its subclass only for the undo)
    own = [c for c in classes if "kind" in c.__dict__ and c.status != 500]
    assert len(classes) >= 20 and len({c.kind for c in own}) == len(own)
    for c in classes:
        assert isinstance(c.outcome, Outcome), c
        if c is not RouterError and c.__name__ != "StateStoreError":
            assert c.outcome is not Outcome.ERROR, f"{c.__name__} has no outcome of its own"
        if c.outcome in (Outcome.UNAVAILABLE,):
            assert c.status in (503, 504), c
        if c.outcome in (Outcome.INVALID, Outcome.UNAUTHORIZED, Outcome.NO_MODEL, Outcome.REFUSED):
            assert 400 <= c.status < 500, c
        if c.outcome is Outcome.SHED or c.status == 503 and c.kind != "backend_unavailable":
            assert c.retry_after is not None, c  # waiting helps: say how long
    assert {errors.Blocked.outcome, errors.BudgetExhausted.outcome, errors.RateLimited.outcome} == {Outcome.REFUSED}
    assert {errors.Overloaded.outcome, errors.TooManyRequests.outcome} == {Outcome.SHED}
    assert set(COUNTED) == {o.value for o in Outcome} - {"invalid", "unauthorized"}


def test_audit_fields_and_retry_after_are_given_at_raise_and_a_remembered_refusal_raises_fresh():
    """Catches a remembered refusal raised as the same instance again and again: its traceback (and the frames,
    request data and all, it keeps alive) grew by two frames a request, measured 10 after 5 raises."""
    e = errors.RateLimited("slow down", retry_after=3, audit={"prada_w": 0.5})
    assert (e.retry_after, e.audit, e.effective) == (3, {"prada_w": 0.5}, None)

    def refuse(held):
        raise held.again()

    lengths = []
    for _ in range(5):
        try:
            refuse(e)
        except errors.RateLimited as raised:
            tb, n = raised.__traceback__, 0
            while tb:
                n, tb = n + 1, tb.tb_next
            lengths.append(n)
            assert raised is not e and raised.retry_after == 3 and raised.audit == {"prada_w": 0.5}
    assert len(set(lengths)) == 1 and e.__traceback__ is None
