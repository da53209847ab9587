"""One host visit: a session to a workstation, the play's steps in order, and the host's verdict.

``host_visit`` opens the session (``session``: pypsrp, bounded by ``limits``), runs the steps
(``steps``: preflight, push, run, collect, each one packaged script of ``remote/``), records them
in the journal and judges the host's state (``outcome``). The engine calls it once per host; it
imports the bottom, the inputs and the journal, never the engine above it.
"""
