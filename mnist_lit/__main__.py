"""`python -m mnist_lit ...` runs the command line (see mnist_lit/cli.py)."""

from mnist_lit.cli import main

if __name__ == "__main__":
    main()
