"""Contract suites: the same cases run against a port's fake (unit tier) and its real
adapter (integration tier), so the fakes the unit tests lean on behave like the real thing."""
