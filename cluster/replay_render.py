"""The frames of `rogueray replay` and of the periodic evaluation's clip: terminal screens (NLE's
`tty_chars`/`tty_colors` drawn with Pillow in a monospace font) or an env's rgb frames, each with
a status line (step, action, reward, caption, LLM label, r_int); and the GIF/MP4 written from
them (imageio; the MP4 only when imageio finds ffmpeg)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from annotator.prompts import EMPTY_CAPTION

# NetHack's 16 curses colours (black drawn dark grey, so that it shows on the black background).
PALETTE = (
    (85, 85, 85), (170, 0, 0), (0, 170, 0), (170, 85, 0), (0, 0, 170), (170, 0, 170),
    (0, 170, 170), (170, 170, 170), (85, 85, 85), (255, 85, 85), (85, 255, 85),
    (255, 255, 85), (85, 85, 255), (255, 85, 255), (85, 255, 255), (255, 255, 255),
)  # fmt: skip
BACKGROUND = (0, 0, 0)
STATUS_BACKGROUND = (24, 24, 48)
STATUS_COLOUR = (230, 230, 120)


@dataclass
class Step:
    """One step as a frame's status line and a transcript row show it: the action's name, the
    reward, the caption, the LLM label the run's store holds for it (None: not labelled) and the
    intrinsic reward (None without a reward model)."""

    step: int
    action: str
    caption: str | None
    label: float | None
    r_int: float | None
    reward: float


def find_font() -> Path | None:
    """A monospace TrueType font: matplotlib's bundled DejaVu Sans Mono (matplotlib is a
    dependency), else a system DejaVu or Liberation mono."""
    try:
        import matplotlib

        bundled = Path(matplotlib.get_data_path()) / "fonts" / "ttf" / "DejaVuSansMono.ttf"
        if bundled.is_file():
            return bundled
    except ImportError:
        pass
    for candidate in (
        "/usr/share/fonts/truetype/dejavu/DejaVuSansMono.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationMono-Regular.ttf",
        "/usr/share/fonts/dejavu/DejaVuSansMono.ttf",
    ):
        if Path(candidate).is_file():
            return Path(candidate)
    return None


def shown_caption(caption: str | None) -> str:
    """A step's caption as the LLM was asked about it: NetHack's empty (or blank) message is
    EMPTY_CAPTION; "" for a step without a caption (an env without messages)."""
    if caption is None:
        return ""
    return caption if caption.strip() else EMPTY_CAPTION


class Renderer:
    """Draws terminal screens (NLE's tty_chars/tty_colors) or rgb frames with a status line."""

    def __init__(self, font_size: int = 14, status_lines: int = 2):
        from PIL import ImageFont

        path = find_font()
        if path is not None:
            self.font = ImageFont.truetype(str(path), font_size)
        else:  # Pillow's own bitmap-free default font (Pillow >= 10.1 scales it)
            self.font = ImageFont.load_default(font_size)
        left, top, right, bottom = self.font.getbbox("M_gy|")
        self.cell_w = max(1, math.ceil(self.font.getlength("M")))
        self.cell_h = max(1, bottom - min(0, top) + 2)
        self.status_lines = status_lines

    def status(self, step: Step) -> list[str]:
        label = f"{step.label:.2f}" if step.label is not None else "pending"
        if step.label is None and (step.r_int is None or step.caption is None):
            label = "n/a"  # no reward model (so no labels), or no caption to label
        r_int = "n/a" if step.r_int is None else f"{step.r_int:+.4f}"
        return [
            f"step {step.step}  action {step.action}  reward {step.reward:+g}  "
            f"r_int {r_int}  LLM label {label}",
            f"caption: {shown_caption(step.caption) or 'n/a'}",
        ]

    def _draw_status(self, draw, top: int, width: int, lines: list[str]) -> None:
        columns = max(1, int(width / self.font.getlength("M")) - 1)
        draw.rectangle(
            [0, top, width, top + self.cell_h * self.status_lines + 4], fill=STATUS_BACKGROUND
        )
        for k, line in enumerate(lines[: self.status_lines]):
            text = line if len(line) <= columns else line[: columns - 1] + "…"
            draw.text((self.cell_w // 2, top + 2 + k * self.cell_h), text, font=self.font,
                      fill=STATUS_COLOUR)  # fmt: skip

    def terminal(self, chars: np.ndarray, colors: np.ndarray, step: Step) -> np.ndarray:
        from PIL import Image, ImageDraw

        rows, cols = chars.shape
        width = _even(cols * self.cell_w)
        height = _even(rows * self.cell_h + self.cell_h * self.status_lines + 4)
        image = Image.new("RGB", (width, height), BACKGROUND)
        draw = ImageDraw.Draw(image)
        codes = np.asarray(colors, np.int64) & 15
        # One character per grid cell (the font's advance is not a whole number of pixels, so
        # strings drawn whole would drift off the grid); blanks are skipped.
        for r, c in zip(*np.nonzero((chars != ord(" ")) & (chars != 0)), strict=True):
            draw.text((c * self.cell_w, r * self.cell_h), chr(chars[r, c]), font=self.font,
                      fill=PALETTE[codes[r, c]])  # fmt: skip
        self._draw_status(draw, rows * self.cell_h, width, self.status(step))
        return np.asarray(image)

    def frame(self, rgb: np.ndarray, step: Step) -> np.ndarray:
        from PIL import Image, ImageDraw

        if isinstance(rgb, str):  # no picture: the observation as text
            rgb = self._text_image(rgb)
        h, w = rgb.shape[:2]
        width = _even(max(w, 60 * self.cell_w))
        height = _even(h + self.cell_h * self.status_lines + 4)
        image = Image.new("RGB", (width, height), BACKGROUND)
        image.paste(Image.fromarray(np.asarray(rgb, np.uint8)[..., :3]), ((width - w) // 2, 0))
        self._draw_status(ImageDraw.Draw(image), h, width, self.status(step))
        return np.asarray(image)

    def frames(self, raw: list, steps: list[Step], nethack: bool) -> list[np.ndarray]:
        """One frame per step: `raw` holds (tty_chars, tty_colors) pairs for NetHack, else rgb
        arrays (or text for an env without a picture), one per step."""
        if nethack:
            return [self.terminal(c, k, s) for (c, k), s in zip(raw, steps, strict=True)]
        return [self.frame(rgb, s) for rgb, s in zip(raw, steps, strict=True)]

    def _text_image(self, text: str) -> np.ndarray:
        from PIL import Image, ImageDraw

        image = Image.new("RGB", (60 * self.cell_w, 3 * self.cell_h), BACKGROUND)
        ImageDraw.Draw(image).text((self.cell_w // 2, self.cell_h), text, font=self.font,
                                   fill=PALETTE[7])  # fmt: skip
        return np.asarray(image)


def _even(n: int) -> int:
    return n + (n % 2)  # video encoders want even sizes


def write_videos(stem: Path, frames: list[np.ndarray], fps: float) -> dict[str, Path]:
    """The GIF (always) and the MP4 (when imageio finds ffmpeg) of `frames`."""
    import imageio.v3 as iio

    paths = {"gif": stem.with_suffix(".gif")}
    # loop=0: repeat forever; every frame differs (the status line counts steps), so Pillow
    # merges none of them and the GIF has one frame per step.
    iio.imwrite(paths["gif"], np.stack(frames), extension=".gif", duration=1000 / fps, loop=0)
    if mp4_available():
        paths["mp4"] = stem.with_suffix(".mp4")
        iio.imwrite(paths["mp4"], np.stack(frames), extension=".mp4", fps=fps, codec="libx264",
                    macro_block_size=1)  # fmt: skip
    return paths


def mp4_available() -> bool:
    try:
        import imageio_ffmpeg

        return bool(imageio_ffmpeg.get_ffmpeg_exe())
    except (ImportError, RuntimeError):
        return False
