"""The ground floor: settings, the lake catalog, locks, the book ladder, PostgreSQL connections. Imports nothing of ours."""
