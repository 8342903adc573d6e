"""The producer service: Ferry's HTTP API (FastAPI). Validates jobs and objects and hands them to Redis."""
