"""`worldmodel web`: the world in a browser tab, one `WorldSession` per visitor.

- server.py: the gradio.Server, its four JSON endpoints and the page; `serve()`
- sessions.py: `SessionManager`: the visitors' sessions, capped, freed when idle
- page.html: the page (HTML, CSS, script), packaged with the code
- cli.py: the `web` command

Light to import: this package loads nothing (no FastAPI, no PyTorch).
"""
