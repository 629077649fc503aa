"""``python -m benchmarks.defense_tradeoff``: see cli.py."""

from .cli import main

raise SystemExit(main())
