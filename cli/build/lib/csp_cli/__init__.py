"""The ``csp`` command: a client of the hub's gateway for agencies' staff and operators."""

__version__ = "0.1.0"
