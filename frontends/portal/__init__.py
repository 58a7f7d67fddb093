"""The user portal (port 3002): register, sign in, profile, documents, account deletion."""
