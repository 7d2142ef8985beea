"""The messenger's benchmark: `make bench` (or `python -m bench --help`).

It creates its own database, starts the project's server processes and two baselines
(a tutorial-style Channels relay and a bare `websockets` relay over Redis pub/sub that
stores into PostgreSQL), drives all three with one asyncio client speaking the
WebSocket protocol of CONTRACT.md, checks that no acknowledged message was lost,
duplicated or reordered, and prints a table (also written to bench/results/).
"""
