"""psml: a harness for the security of model-zoo inference serving (PSML, arXiv 2307.01292)."""

__version__ = "0.1.0"
