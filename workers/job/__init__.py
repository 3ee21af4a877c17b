"""The job: the driver (plan -> dispatch -> commit), the Ray cluster and actors, shards and the ledger."""
