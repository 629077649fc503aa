"""A phased load: benign warm-up, attack (benign plus attackers), benign cool-down; then stop."""

from __future__ import annotations

from locust import LoadTestShape

from .config import LoadSettings


class PhasedShape(LoadTestShape):
    settings = LoadSettings.from_env()

    def tick(self):
        from .users import AttackerUser, BenignUser

        s, t = self.settings, self.get_run_time()
        if t < s.warmup_s:
            return s.benign_users, s.spawn_rate_per_s, [BenignUser]
        if t < s.warmup_s + s.attack_s:
            # Locust adds the extra users from the classes listed here, so listing only the attackers keeps
            # the benign users running and adds exactly `attackers` attackers (fixed_count is ignored when a
            # shape names its classes, in Locust 2.47).
            return s.benign_users + s.attackers, s.spawn_rate_per_s, [AttackerUser]
        if t < s.total_s:
            return s.benign_users, s.spawn_rate_per_s, [BenignUser]
        return None
