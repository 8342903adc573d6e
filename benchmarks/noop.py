"""The plain-RQ no-op job. Its own module with no imports: a forking RQ `Worker` imports a job's module
again in every work horse, so a module that imported numpy would add ~100 ms to each job."""


def noop() -> None:
    return None
