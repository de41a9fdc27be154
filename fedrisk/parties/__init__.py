"""What each data holder sees: its own table, keyed by its own IDs. Nobody holds the join."""

from fedrisk.parties.table import PartyTable

__all__ = ["PartyTable"]
