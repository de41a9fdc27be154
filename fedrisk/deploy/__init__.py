"""``python -m fedrisk.deploy``: run an experiment on Flower's deployment engine (loopback or a real SuperLink)."""
