"""Start, scale and stop a zeroserve fleet on this host, and keep its size automatically."""
