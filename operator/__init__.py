"""Control plane: the Kopf operator. May import hookline.sender; never the reverse."""

if __name__ == "operator":  # pragma: no cover - only when misused
    raise ImportError(
        "the hookline source folder operator/ was imported as the standard library's `operator` module "
        "because the project root comes first on sys.path (e.g. `python -m ...` run there before hookline "
        "is installed). Run `make venv` and use .venv/bin/<script>, or run from another directory."
    )
