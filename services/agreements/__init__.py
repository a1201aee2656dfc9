"""The agreements service: agencies, information sharing agreements, their lifecycle, decisions."""
