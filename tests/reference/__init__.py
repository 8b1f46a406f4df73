"""Plain-Python reference implementations: slow, obvious, and the oracle for the production code."""
