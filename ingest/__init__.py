"""PostgreSQL -> raw lake: stream schemas, bulk extract, quarantine, reconciliation, freshness (the read path)."""
