"""REST API: FastAPI app, auth, keys, cached read functions."""
