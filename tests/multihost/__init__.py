"""Multi-host test harness: sshd per host on loopback addresses, nginx, app backends (see harness.py)."""
