"""Entry points: one module per `hookline` subcommand of the data plane; nothing imports them but the CLI."""
