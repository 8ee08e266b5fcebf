"""``python -m loadtest run|compare|ceiling ...`` (see loadtest/cli.py)."""

from loadtest.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
