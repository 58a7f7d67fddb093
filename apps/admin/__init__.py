"""Admin API: documents in, OCR text out (port 8003, admindb)."""
