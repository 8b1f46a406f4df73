"""The source side (development and tests): source DDL, the embedded PostgreSQL, the simulator, recording loaders."""
