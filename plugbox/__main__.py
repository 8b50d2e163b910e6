"""`python -m plugbox`: the command line, for when the `plugbox` script is not on PATH."""

from plugbox.cli import main

if __name__ == "__main__":  # importing the package's modules (tests walk them all) must not run the CLI
    main()
