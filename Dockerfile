# One image for every Ferry service; docker-compose.yml picks each service's command
# (`ferry producer`, `ferry worker`, and `ferry health` for the worker's healthcheck).
# Build it with `docker compose build` (or `docker compose up --build`).
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# A fixed uid, so files on mounted volumes have a predictable owner.
RUN useradd --create-home --uid 10001 --user-group ferry

WORKDIR /app

# Dependencies first, read from pyproject.toml alone: this layer is rebuilt only when pyproject.toml
# changes, not on every source edit. setuptools and wheel are the build backend for the last step.
COPY pyproject.toml ./
RUN python -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
        > /tmp/requirements.txt \
    && pip install "setuptools>=68" wheel -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt

# Then the source, installed as a regular package (no editable install in an image) without touching
# the dependencies installed above. README.md is part of the package metadata.
COPY README.md ./
COPY shared ./shared
COPY services ./services
RUN pip install --no-deps --no-build-isolation . \
    && rm -rf build ./*.egg-info

# Users' task modules: docker-compose.yml mounts FERRY_TASKS_DIR here (or a derived image COPYs them here),
# and FERRY_TASK_MODULES names the modules to import.
RUN mkdir -p /app/tasks
ENV PYTHONPATH=/app/tasks

USER ferry
EXPOSE 8000
CMD ["ferry", "--help"]
