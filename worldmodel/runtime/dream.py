"""Your world as a Gymnasium env: the model draws every observation (DIAMOND's WorldModelEnv, in
Gymnasium's form). The door for training agents inside a learned world.

    import gymnasium as gym
    env = gym.make("worldmodel.runtime.dream:worldmodel/Dream-v0", checkpoint="overworld")
    obs, info = env.reset(seed=0)                         # the model's start frame, (H, W, 3) uint8
    obs, reward, terminated, truncated, info = env.step(env.action_space.sample())

The action space is the model's game's: one-of-N (`Discrete(n + 1)`, 0 = nothing pressed, i = the
i-th key) when its actions are exclusive, else `MultiBinary(n)` over its keys; with continuous axes,
a `Dict` of {"keys": ..., "axes": Box}. `reset(options={"frames": ...})` starts from real frames of
your own (uint8 (N, H, W, 3) or one (H, W, 3)). The model predicts frames, not rewards or the end of
an episode: the reward is 0 and an episode ends only by `max_episode_steps` (truncated).
`info["action"]` names the keys applied; `info["frame_index"]` counts frames since the reset.
"""

from __future__ import annotations

import gymnasium as gym
import numpy as np

ID = "worldmodel/Dream-v0"


class DreamEnv(gym.Env):
    metadata = {"render_modes": ["rgb_array"], "render_fps": 15}

    def __init__(
        self,
        checkpoint: str = "overworld",
        device: str = "cpu",
        backend: str = "eager",
        max_episode_steps: int | None = None,
        render_mode: str | None = "rgb_array",
        session=None,
    ):
        from .session import WorldSession

        self.session = session or WorldSession.from_checkpoint(checkpoint, device=device, backend=backend)
        cfg, space = self.session.cfg, self.session.action_space
        self.space, self.max_episode_steps, self.render_mode = space, max_episode_steps, render_mode
        self.observation_space = gym.spaces.Box(0, 255, (cfg.frame_height, cfg.frame_width, 3), np.uint8)
        keys = (
            gym.spaces.Discrete(len(space.keys) + 1)
            if space.exclusive
            else gym.spaces.MultiBinary(len(space.keys))
        )
        if space.axes:
            axes = gym.spaces.Box(-np.inf, np.inf, (len(space.axes),), np.float32)
            self.action_space = gym.spaces.Dict({"keys": keys, "axes": axes})
        else:
            self.action_space = keys
        self._frame: np.ndarray | None = None
        self._steps = 0

    def to_vector(self, action) -> np.ndarray:
        """A Gymnasium action of this env -> the model's action vector (keys, then axes)."""
        space, vec = self.space, self.space.noop()
        keys, axes = (action["keys"], action["axes"]) if isinstance(action, dict) else (action, None)
        k = len(space.keys)
        if space.exclusive:
            i = int(np.asarray(keys).reshape(()))
            if not 0 <= i <= k:
                raise ValueError(f"action {i}: expected 0 (nothing) to {k} for keys {', '.join(space.keys)}")
            if i:
                vec[i - 1] = 1.0
        else:
            held = np.asarray(keys).reshape(-1)
            if held.shape != (k,):
                raise ValueError(
                    f"action keys have shape {held.shape}, expected ({k},) for {', '.join(space.keys)}"
                )
            vec[:k] = held > 0
        if axes is not None:
            vec[k:] = np.asarray(axes, np.float32).reshape(-1)
        return space.canonical(vec)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        frames = (options or {}).get("frames")
        self._frame = self.session.reset(frames, seed=seed)
        self._steps = 0
        return self._frame, {"frame_index": self.session.frame_index}

    def step(self, action):
        if self._frame is None:
            raise RuntimeError("call reset() before step()")
        vec = self.to_vector(action)
        self._frame = self.session.step(vec)
        self._steps += 1
        truncated = self.max_episode_steps is not None and self._steps >= self.max_episode_steps
        info = {"frame_index": self.session.frame_index, "action": self.space.decode(vec)}
        return self._frame, 0.0, False, truncated, info

    def render(self):
        return self._frame


if ID not in gym.registry:
    gym.register(id=ID, entry_point="worldmodel.runtime.dream:DreamEnv")
