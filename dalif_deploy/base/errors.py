"""Exceptions with the contract the CLI relies on: message says what and how to fix it."""


class DaLifError(Exception):
    """Bad input or an unsupported operation. The CLI prints one line and exits with code 2."""


class VerificationFailed(DaLifError):
    """A check ran and its thresholds did not hold. The CLI exits with code 1."""


class LavaRunError(DaLifError):
    """A Lava run failed or timed out (reported by the watchdog)."""
