"""The tests, one package per package of cpuu_fleet (``tests/<package>/test_<module>.py``).

``core/`` tests the bottom modules, ``waves/`` runs whole waves against the lab, ``faults/`` is the
fault matrix, and ``support/`` holds the helpers that are not fixtures.
"""
