"""The users API (port 8001, apidb): profiles, with a Redis read-through cache."""
