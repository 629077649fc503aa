"""The serving stack as processes and clients: Triton and router lifecycles, a whole stack on loopback, the
systems under test (router, direct Triton) and the closed-loop load harness.

Imports only common/; zoo, attacks, load tests, benchmarks and the command line build on it.
"""
