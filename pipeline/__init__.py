"""Orchestration of latentatlas: the CLI, the Prefect flows, the engine that runs a stage as a flow or a plain loop,
worker placement and the local Prefect server. It imports ``stages/`` and the core (``latentatlas/``); nothing imports
it."""
