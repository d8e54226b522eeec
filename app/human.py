"""A person at the keyboard, as a recording agent: `worldmodel record --agent human`.

Shows each frame in a scaled Pygame window and returns the keys held while it was shown
as the action for that frame. Held keys are tracked from key-down/key-up events (and
cleared when the window loses focus), so what is recorded is exactly what was pressed.
Esc or closing the window stops the recording; finished frames are kept.
"""

from __future__ import annotations

import os

import numpy as np

from .keymap import KeyMap

STATUS_H = 22


class HumanAgent:
    name = "human"

    def __init__(self, fps: float = 15.0, scale: int = 8, title: str = "worldmodel record"):
        self.fps, self.scale, self.title = float(fps), int(scale), title
        self.screen = None
        self.held: set[str] = set()
        self.frames = 0

    def reset(self, seed: int, actions) -> None:
        import pygame

        self.pg = pygame
        if self.screen is None:
            os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
            pygame.display.init()
            pygame.font.init()
            pygame.display.set_caption(self.title)
            self.clock = pygame.time.Clock()
            self.font = pygame.font.Font(None, 20)
        self.keymap = KeyMap(actions)
        self.held.clear()
        self.episode_frames = 0

    def act(self, obs: np.ndarray, info: dict):
        pg = self.pg
        h, w = obs.shape[:2]
        size = (w * self.scale, h * self.scale + STATUS_H)
        if self.screen is None or self.screen.get_size() != size:
            self.screen = pg.display.set_mode(size)
        surf = pg.surfarray.make_surface(np.ascontiguousarray(obs.transpose(1, 0, 2)))
        self.screen.blit(pg.transform.scale(surf, (w * self.scale, h * self.scale)), (0, 0))
        self._status(h * self.scale, w * self.scale)
        pg.display.flip()
        self.clock.tick(self.fps)  # the frame stays up for 1/fps s; keys held meanwhile are its action

        for event in pg.event.get():
            if event.type == pg.QUIT:
                return None
            if event.type == pg.KEYDOWN:
                if event.key == pg.K_ESCAPE:
                    return None
                self.held.add(pg.key.name(event.key))
            elif event.type == pg.KEYUP:
                self.held.discard(pg.key.name(event.key))
            elif event.type == getattr(pg, "WINDOWFOCUSLOST", -1):
                self.held.clear()
        self.frames += 1
        self.episode_frames += 1
        return self.keymap.action(self.held)

    def _status(self, y: int, width: int):
        pg = self.pg
        pg.draw.rect(self.screen, (24, 24, 30), (0, y, width, STATUS_H))
        keys = "+".join(self.keymap.actions.decode(self.keymap.action(self.held))) or "-"
        text = f"REC {self.episode_frames}  {keys}  Esc: save+quit"
        self.screen.blit(self.font.render(text, True, (235, 235, 235)), (6, y + 4))

    def close(self):
        if self.screen is not None:
            self.pg.display.quit()
            self.screen = None
