"""What both frontends share: sessions, CSRF, calls to the APIs, error pages, the app shell."""
