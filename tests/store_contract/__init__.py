"""The store contract suite (see conftest.py)."""
