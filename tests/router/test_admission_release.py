"""Every way a request can fail after admission gives its slot back (a real router and Triton)."""

import requests

from tests.conftest import infer


def test_failed_requests_release_their_admission_slot(start_router, data):
    """One slot per key: after each failure after admission (a body that does not parse, the wrong shape, a
    requirement no model meets) the same key is served at once. Catches a slot released only on the success
    path: the first failure would hold the key's only slot and every later request would get 429."""
    router = start_router("slots", max_in_flight=4, max_in_flight_per_client=1, on_no_model="reject")
    x = data.x["test"][:2]
    url, key = f"{router.url}/v1/infer", {"x-api-key": "k-benign"}
    failures = [
        lambda: requests.post(url, data=b"{not json", headers=key | {"content-type": "application/json"}, timeout=30),
        lambda: requests.post(url, json={"inputs": [[1.0, 2.0]]}, headers=key, timeout=30),
        lambda: infer(router, x, min_accuracy=0.9999),
    ]
    for _ in range(3):
        for fail in failures:
            r = fail()
            assert r.status_code in (400, 422), r.text
            ok = infer(router, x)
            assert ok.status_code == 200, ok.text
