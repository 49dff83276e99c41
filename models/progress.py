"""Progress of the long stages (training epochs, the precision search's units), for a person
watching a run.

The core reports through one standard logger, ``quantrec.progress``, at INFO, and never
prints: the ``quantrec`` CLI writes its records to stderr (stdout keeps the records of
``--json``), and Prefect forwards them to the flow run's logs in the UI
(``PREFECT_LOGGING_EXTRA_LOGGERS``, set by ``tasks.settings.prepare_process_environment``).
Without a handler nothing is shown (a library user, the tests).
"""

from __future__ import annotations

import logging

LOGGER_NAME = "quantrec.progress"
_logger = logging.getLogger(LOGGER_NAME)
_logger.setLevel(logging.INFO)  # its handlers decide what is shown, not the root level


def progress(message: str, *args: object) -> None:
    """Report one step of a long stage (``logging``-style ``%`` arguments)."""
    _logger.info(message, *args)


def print_progress_to(stream) -> None:
    """Show progress on ``stream`` (the CLI: stderr), each line indented under its day."""
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("  %(message)s"))
    _logger.addHandler(handler)
    _logger.propagate = False  # once, not again through the root logger's handlers
