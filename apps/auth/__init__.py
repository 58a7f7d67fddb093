"""The auth service (port 8002, authdb): users, tokens, sessions, JWKS."""
