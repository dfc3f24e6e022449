"""Durable async jobs in the broker: the job model, the lease/retry scheduler (pure), the desk
that joins them to the store and the sockets, and the job sockets themselves."""
