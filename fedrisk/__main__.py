"""`python -m fedrisk` is the same as the `fedrisk` command."""

from fedrisk.cli import main

if __name__ == "__main__":
    main()
