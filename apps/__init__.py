"""The HTTP APIs: one package per service (auth, users, admin)."""
