"""``python -m geocli`` is the same as the ``geoloc`` console script."""

from geocli.cli.main import run

if __name__ == "__main__":
    run()
