"""Locust load tests: benign and attacker users against the router, a phased load shape, a psml summary."""
