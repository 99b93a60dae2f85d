"""Orchestration of latentatlas: validated params, chunked stores, Prefect flows, the CLI and the dataset reader."""
