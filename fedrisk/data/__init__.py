"""What each data holder sees (its own table, keyed by its own IDs), the synthetic world, and the splits."""

from fedrisk.data.table import PartyTable

__all__ = ["PartyTable"]
