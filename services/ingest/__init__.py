"""Ingest: the dataset catalogue, validated batches, raw records and the outbox to depersonalise."""
