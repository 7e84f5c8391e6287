"""Scheduled work (APScheduler): receivables scan, digests, outbox dispatch."""
