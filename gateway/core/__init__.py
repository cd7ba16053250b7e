"""The pure cores, sans-I/O: the device session, commit planning, the alert engine and
its rules, device liveness and offline tracking, rate and connection limits.

Nothing here touches a socket, a database or the clock: callers pass frames, readings
and `now`, and get decisions back as values. `rules.load_rules` reading one file is the
only exception.
"""
