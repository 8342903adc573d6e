"""`python -m services.producer`: the same command as `ferry producer`."""

from __future__ import annotations

import typer

from services.producer.entry import producer


def main() -> None:
    typer.run(producer)


if __name__ == "__main__":
    main()
