"""Ferry's services: the producer (HTTP API), the worker node, and the admin CLI.

Each imports `shared`, never each other.
"""
