"""Modules generated from protos/ by scripts/gen_protos; do not edit.

Their descriptors live in a pool of their own, not protobuf's default pool, so that
a process may also import other projects' modules of package ``inference`` (such
as tritonclient's) without a duplicate-symbol error.
"""
from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
