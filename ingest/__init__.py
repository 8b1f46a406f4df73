"""PostgreSQL source: schema, embedded server, simulator, recording loader, bulk extract, quarantine."""
