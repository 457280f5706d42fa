"""One module per ``packbms`` subcommand (see :mod:`packbms.cli`)."""
