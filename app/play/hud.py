"""What the window draws over the frame: the HUD (fps, ms/frame, key-to-screen latency, frame,
cache, device, keys), the REC / PAUSED badges, the help panel; and the same as data (`status()`,
kept in --status-file for scripts and tests). A part of Player, which holds the state it reads."""

from __future__ import annotations

import json
import time
import zlib

from .controls import HELP


class Drawing:
    """Player's drawing: reads the player's state, draws it with pygame (self.pg, self.screen)."""

    def _set_window(self) -> None:
        cfg = self.models[self.model].session.cfg
        size = (cfg.frame_width * self.scale, cfg.frame_height * self.scale)
        if self.screen is None or self.screen.get_size() != size:
            self.screen = self.pg.display.set_mode(size)
        self.pg.display.set_caption(f"worldmodel play - {self.models[self.model].name}")

    def _fps(self) -> float | None:
        """Frames shown per second over the last 2 s, or over the last few frames when the model is
        slower than one frame a second (so that fps shows whenever ms/frame does)."""
        now = time.perf_counter()
        recent = [t for t in self.shown_at if now - t < 2.0]
        if len(recent) < 3:
            recent = [t for t in self.shown_at if now - t < 30.0][-4:]
        if len(recent) < 2 or recent[-1] == recent[0]:
            return None
        return (len(recent) - 1) / (recent[-1] - recent[0])

    def _hud_text(self) -> list[str]:
        m, f = self.models[self.model], self.frame
        s = m.session
        fps, ms, lat = self._fps(), self._ms(), self.latency_ms
        keys = "+".join(s.action_space.decode(self.keymap.action(self.held))) or "-"
        return [
            (f"{fps:.1f} fps" if fps else "- fps") + "   " + (f"{ms:.1f} ms/frame" if ms else "- ms/frame"),
            f"key-to-screen latency {lat:.0f} ms" if lat is not None else "key-to-screen latency -",
            f"frame {f.frame_index if f else '-'}   cache {f.cache_fill if f else 0}/{s.cache_slots}",
            f"{s.device.type}   {s.backend}   seed {self.seed}",
            f"{m.name}",
            f"keys: {keys}",
        ]

    def first_frame_key(self) -> str:
        """Which first frames are alike: the backend, the machine and the model."""
        from worldmodel.runtime.backends import first_frame_key

        m = self.models[self.model]
        return first_frame_key(m.session, m.name)

    def notice(self) -> str | None:
        """What the window waits for, while it waits: the model, or the compiled backend's compile (its
        first frame, before which nothing moves)."""
        if self.frame is None:
            return "loading ..."
        if (
            self.first_shown_at is None
            and self.in_flight
            and self.models[self.model].session.backend == "compiled"
        ):
            from worldmodel.runtime.backends import compile_notice

            if self._notice is None:  # read once, not at every drawing
                self._notice = compile_notice(self.first_frame_key())
            return self._notice
        return None

    def _ms(self) -> float | None:
        return sum(self.step_ms) / len(self.step_ms) if self.step_ms else None

    def _draw(self) -> None:
        pg, screen = self.pg, self.screen
        screen.fill((0, 0, 0))
        if self._frame_surface is not None:
            screen.blit(self._frame_surface, (0, 0))
        self.hud_lines = self._hud_text() if self.show_hud else []
        if self.hud_lines:
            self._panel(self.hud_lines, (6, 6))
        badges = [t for t, on in (("REC", self.recording), ("PAUSED", self.paused)) if on]
        if self.quitting and self.saving:
            badges.append("saving ...")
        notice = self.notice()
        if notice == "loading ...":
            badges.append(notice)
        x = screen.get_width() - 6
        for text in badges:
            img = self.font.render(text, True, (255, 80, 80) if text == "REC" else (255, 230, 120))
            x -= img.get_width() + 10
            pg.draw.rect(screen, (0, 0, 0), (x - 5, 6, img.get_width() + 10, img.get_height() + 6))
            screen.blit(img, (x, 9))
        if notice and notice != "loading ..." and not self.show_help:
            self._panel([notice], None)
        if self.show_help:
            rows = [f"{k}:  {what}" for k, what in HELP]
            rows += ["", f"keys of {self.models[self.model].name}:", *self.keymap.help_lines()]
            self._panel(rows, None)
        pg.display.flip()
        self._dirty = False
        self._drawn_at = time.perf_counter()

    def _panel(self, lines: list[str], at: tuple[int, int] | None) -> None:
        """Text on a translucent dark box; at=None centres it."""
        pg = self.pg
        images = [self.font.render(t, True, (240, 240, 240)) for t in lines]
        step = self.font.get_linesize()
        w = max(i.get_width() for i in images) + 16
        h = step * len(images) + 10
        if at is None:
            at = ((self.screen.get_width() - w) // 2, max(0, (self.screen.get_height() - h) // 2))
        box = pg.Surface((w, h), pg.SRCALPHA)
        box.fill((0, 0, 0, 170))
        self.screen.blit(box, at)
        for k, img in enumerate(images):
            self.screen.blit(img, (at[0] + 8, at[1] + 5 + k * step))

    def status(self) -> dict:
        """What the window shows, as data (written to --status-file for scripts and tests)."""
        f, s = self.frame, self.models[self.model].session
        return {
            "model": self.models[self.model].name,
            "frame_index": None if f is None else f.frame_index,
            "frames": self.frames,
            "frame_crc": None if f is None else zlib.crc32(f.image.tobytes()),
            "frame_action": [] if f is None or f.action is None else s.action_space.decode(f.action),
            "frame_axes": {} if f is None or f.action is None else _axes(s.action_space, f.action),
            "mouse_captured": self.captured,
            "held": sorted(self.held),
            "action": s.action_space.decode(self.keymap.action(self.held)),
            "paused": self.paused,
            "recording": self.recording,
            "hud": self.show_hud,
            "help": self.show_help,
            "hud_lines": self.hud_lines,
            "notice": self.notice(),
            "latency_ms": self.latency_ms,
            "fps": self._fps(),
            "ms_per_frame": self._ms(),  # mean of the last frames, as on the HUD
            "cache_fill": None if f is None else f.cache_fill,
            "cache_slots": s.cache_slots,
            "device": str(s.device),
            "backend": s.backend,
            "seed": self.seed,
            "last_video": None if self.last_video is None else str(self.last_video),
            "last_screenshot": None if self.last_screenshot is None else str(self.last_screenshot),
        }

    def _write_status(self) -> None:
        if self.status_file is None:
            return
        tmp = self.status_file.with_name(f".{self.status_file.name}.tmp")
        tmp.write_text(json.dumps(self.status()))
        tmp.replace(self.status_file)  # readers never see half a file


def _axes(space, action) -> dict[str, float]:
    """The axes' values of an action vector."""
    k = len(space.keys)
    return {a: float(action[k + i]) for i, a in enumerate(space.axes)}
