"""Cross-cutting library of the hub: settings, database, errors, internal tokens, logging.

It never runs on its own and holds no domain logic.
"""
