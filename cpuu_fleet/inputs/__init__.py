"""Inputs: what the operator hands over, read and checked before any host is touched.

Data files (YAML with line numbers), inventories with their host and group variables, ``--limit``
patterns, credentials and secrets, WinRM connection settings, playbooks, the per-host rendering of
the INI and batch templates, the wizard import and the payload. Everything here imports only the
bottom of the package (vocabulary, errors, vendor facts, Windows text, redaction, limits, file
names): an input is plain data by the time the engine plans with it.
"""
