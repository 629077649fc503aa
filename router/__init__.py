"""The psml router: picks a zoo model per query from the stated metrics, applies defenses, forwards to Triton."""
