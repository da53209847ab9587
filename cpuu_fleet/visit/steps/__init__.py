"""The four things a wave does to a workstation, one module each, in the order a visit takes them:
``preflight`` → ``push`` → ``run`` → ``collect``; ``context`` is what they share (the visit's
:class:`~cpuu_fleet.visit.steps.context.HostContext`, the remote paths) and ``explain`` what a
remote error means to an operator. Import each name from the module that defines it: this
package re-exports nothing.

Each step takes the host's ``HostContext`` and its open :class:`~cpuu_fleet.visit.session.HostSession`
and returns a typed result; a failure is a :class:`~cpuu_fleet.visit.session.SessionError` (the per-host
pipeline in ``host_visit.py`` turns it into the host's state). The remote side of each step is one
script of ``cpuu_fleet/visit/remote/`` whose contract is ``docs/remote-scripts.md``.

Round trips are the cost that matters on a WAN with thousands of hosts: a full update visit is
25 round trips (3 NTLM legs, Create + 2 Receives to open the pool, 5 pipelines of a Command and a
Receive each, 8 Sends for a 2 MB payload, the Delete): finished pipelines are not closed one by
one (see ``HostSession``). How each step keeps to its share is said in its module.
"""
