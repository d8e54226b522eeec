"""`worldmodel play`: a world model in a Pygame window.

- player.py: the game loop (events, controls, talking to the worker); the two-thread design
- hud.py: what the window draws over the frame, and the same as data (--status-file)
- worker.py: the thread that calls the sessions; `Model`, a session to play
- controls.py: the window's own keys and the help text (light: no pygame, numpy or PyTorch)
- launch.py: `play()`: load the models, open the window, report
- cli.py: the `play` command

Light to import: this package loads nothing.
"""
