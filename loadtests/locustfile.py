"""Entry point for Locust: ``locust -f loadtests/locustfile.py`` (``psml loadtest`` runs it headless)."""

from loadtests.shape import PhasedShape  # noqa: F401  (Locust picks up the shape class)
from loadtests.users import AttackerUser, BenignUser  # noqa: F401
