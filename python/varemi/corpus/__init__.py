"""A corpus in worker processes: the per-file job, the cache and its keys, duplicate groups."""
