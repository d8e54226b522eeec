"""The faces of worldmodel: the `worldmodel` command and the windows and pages people play in.

They see a game or a WorldSession through its public API, never model internals.
"""
