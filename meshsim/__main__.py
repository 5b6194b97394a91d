"""``python -m meshsim`` runs the command-line interface."""

from meshsim.cli.main import main

if __name__ == "__main__":
    main()
