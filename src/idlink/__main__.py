"""``python -m idlink``: the idlink command."""

from idlink.cli import main

if __name__ == "__main__":
    raise SystemExit(main())
