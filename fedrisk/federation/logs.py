"""Flower's own log: set its level after Flower is imported (importing Flower resets it to DEBUG)."""

from __future__ import annotations

import logging


def set_flower_log_level(level: str) -> None:
    """Quiet (or open up) Flower's logger for this process; call it before any federation runs."""
    from flwr.common.logger import LOGGER_NAME  # importing Flower's logger module sets its level first

    logging.getLogger(LOGGER_NAME).setLevel(level)
