"""The ground floor: errors, statistics, tables, atomic writes, ports, versions, result files, process CPU.

Imports nothing else of the project; every other package may import it (tests/test_layout.py checks).
"""
