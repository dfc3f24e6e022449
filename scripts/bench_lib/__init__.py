"""The pieces of ``scripts/bench``: profiles (what to measure), servers (the processes
under test, the tornado echo baseline among them), wrk (the load), report (the table)."""
