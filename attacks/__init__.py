"""Attacks on model-zoo serving through the router's public API: fingerprinting and model extraction."""
