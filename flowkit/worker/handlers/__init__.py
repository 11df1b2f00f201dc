"""Handler base classes (see :mod:`flowkit.worker.handlers.base`)."""
