"""Execute a plan: the scheduler (order, batches, deadline), the backend worker process, the journal, the failure policy."""
