"""Helpers shared by the tests (imported as ``tests.support.<module>``); fixtures stay in
the ``conftest.py`` files.
"""
