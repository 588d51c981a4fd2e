"""Stand-ins for the ComfyUI core nodes our example workflows use (schemas as in ComfyUI 0.33).

LoadImage, LoadVideo, GetVideoComponents, CreateVideo, SaveVideo, ImageScaleBy, PreviewImage,
SaveImage, LoadAudio. `MAX_FRAMES` (tests only) caps the frames LoadVideo decodes to keep runs short.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from fractions import Fraction

import numpy as np
import torch
import torch.nn.functional as F

import folder_paths
from comfy_api.latest import io, ui

MAX_FRAMES: int | None = None
IMAGE_EXTS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")
VIDEO_EXTS = (".mp4", ".webm", ".mkv", ".mov", ".gif")


def _input_files(exts):
    d = folder_paths.get_input_directory()
    return sorted(f for f in os.listdir(d) if f.lower().endswith(exts)) if os.path.isdir(d) else []


@dataclass
class VideoComponents:
    images: torch.Tensor
    frame_rate: Fraction
    audio: dict | None = None
    metadata: dict | None = None


class VideoFromFile:
    def __init__(self, path: str):
        self.path = path

    def get_components(self) -> VideoComponents:
        import imageio.v2 as iio

        reader = iio.get_reader(self.path, "ffmpeg")
        fps = reader.get_meta_data().get("fps", 25.0)
        frames = []
        for i, f in enumerate(reader):
            if MAX_FRAMES is not None and i >= MAX_FRAMES:
                break
            frames.append(np.asarray(f)[..., :3])
        reader.close()
        images = torch.from_numpy(np.stack(frames)).float() / 255.0
        return VideoComponents(images, Fraction(fps).limit_denominator(1000))

    def get_dimensions(self):
        c = self.get_components()
        return c.images.shape[2], c.images.shape[1]


class VideoFromComponents:
    def __init__(self, components: VideoComponents):
        self.components = components

    def get_components(self):
        return self.components

    def get_dimensions(self):
        return self.components.images.shape[2], self.components.images.shape[1]

    def save_to(self, path: str, **kwargs):
        import imageio.v2 as iio

        frames = (self.components.images.clamp(0, 1) * 255).round().to(torch.uint8).numpy()
        iio.mimwrite(path, list(frames), fps=float(self.components.frame_rate), macro_block_size=1)


class LoadImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="LoadImage", display_name="Load Image", category="image",
                         inputs=[io.Combo.Input("image", options=_input_files(IMAGE_EXTS), upload=io.UploadType.image)],
                         outputs=[io.Image.Output(display_name="IMAGE"), io.Mask.Output(display_name="MASK")])

    @classmethod
    def execute(cls, image):
        from PIL import Image

        img = Image.open(folder_paths.get_annotated_filepath(image))
        arr = np.asarray(img.convert("RGBA"), dtype=np.float32) / 255.0
        t = torch.from_numpy(arr)[None]
        mask = 1.0 - t[..., 3] if img.mode in ("RGBA", "LA") else torch.zeros((1, 64, 64))
        return io.NodeOutput(t[..., :3].contiguous(), mask)


class LoadVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="LoadVideo", display_name="Load Video", category="image/video",
                         inputs=[io.Combo.Input("file", options=_input_files(VIDEO_EXTS), upload=io.UploadType.video)],
                         outputs=[io.Video.Output()])

    @classmethod
    def execute(cls, file):
        return io.NodeOutput(VideoFromFile(folder_paths.get_annotated_filepath(file)))


class GetVideoComponents(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="GetVideoComponents", display_name="Get Video Components", category="image/video",
                         inputs=[io.Video.Input("video")],
                         outputs=[io.Image.Output(display_name="images"), io.Audio.Output(display_name="audio"),
                                  io.Float.Output(display_name="fps"), io.Int.Output(display_name="bit_depth"),
                                  io.String.Output(display_name="color_space")])

    @classmethod
    def execute(cls, video):
        c = video.get_components()
        return io.NodeOutput(c.images, c.audio, float(c.frame_rate), 8, "bt709")


class CreateVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="CreateVideo", display_name="Create Video", category="image/video",
                         inputs=[io.Image.Input("images"),
                                 io.Float.Input("fps", default=30.0, min=1.0, max=120.0, step=1.0),
                                 io.Audio.Input("audio", optional=True),
                                 io.Int.Input("bit_depth", default=8, min=8, max=16, optional=True)],
                         outputs=[io.Video.Output()])

    @classmethod
    def execute(cls, images, fps, audio=None, bit_depth=8):
        return io.NodeOutput(VideoFromComponents(VideoComponents(images, Fraction(fps).limit_denominator(1000), audio)))


class SaveVideo(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="SaveVideo", display_name="Save Video", category="image/video",
                         inputs=[io.Video.Input("video"),
                                 io.String.Input("filename_prefix", default="video/ComfyUI"),
                                 io.Combo.Input("format", options=["mp4", "mkv", "webm"], default="mp4"),
                                 io.Combo.Input("codec", options=["h264", "av1"], default="h264")],
                         outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, video, filename_prefix, format, codec):
        w, h = video.get_dimensions()
        folder, name, counter, subfolder, _ = folder_paths.get_save_image_path(
            filename_prefix, folder_paths.get_output_directory(), w, h)
        file = f"{name}_{counter:05}_.{format}"
        video.save_to(os.path.join(folder, file))
        return io.NodeOutput(ui=ui.PreviewVideo([ui.SavedResult(file, subfolder, io.FolderType.output)]))


class ImageScaleBy(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="ImageScaleBy", display_name="Upscale Image By", category="image/upscaling",
                         inputs=[io.Image.Input("image"),
                                 io.Combo.Input("upscale_method",
                                                options=["nearest-exact", "bilinear", "area", "bicubic", "lanczos"]),
                                 io.Float.Input("scale_by", default=1.0, min=0.01, max=8.0, step=0.01)],
                         outputs=[io.Image.Output()])

    @classmethod
    def execute(cls, image, upscale_method, scale_by):
        h, w = round(image.shape[1] * scale_by), round(image.shape[2] * scale_by)
        mode = {"nearest-exact": "nearest-exact", "area": "area"}.get(upscale_method, "bilinear")
        out = F.interpolate(image.movedim(-1, 1), size=(h, w), mode=mode)
        return io.NodeOutput(out.movedim(1, -1).clamp(0, 1))


class PreviewImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="PreviewImage", display_name="Preview Image", category="image",
                         inputs=[io.Image.Input("images")], outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, images):
        return io.NodeOutput(ui=ui.PreviewImage(images, cls=cls))


class LoadAudio(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="LoadAudio", display_name="Load Audio", category="audio",
                         inputs=[io.Combo.Input("audio", options=_input_files((".wav", ".mp3", ".flac", ".mp4")),
                                                upload=io.UploadType.audio)],
                         outputs=[io.Audio.Output()])

    @classmethod
    def execute(cls, audio):
        import wave

        with wave.open(folder_paths.get_annotated_filepath(audio)) as w:
            sr, ch, n, width = w.getframerate(), w.getnchannels(), w.getnframes(), w.getsampwidth()
            raw = np.frombuffer(w.readframes(n), {1: np.int8, 2: np.int16, 4: np.int32}[width])
        wave_ = torch.from_numpy(raw.astype(np.float32) / float(2 ** (8 * width - 1))).reshape(-1, ch).T
        return io.NodeOutput({"waveform": wave_[None].contiguous(), "sample_rate": sr})


class SaveImage(io.ComfyNode):
    @classmethod
    def define_schema(cls):
        return io.Schema(node_id="SaveImage", display_name="Save Image", category="image",
                         inputs=[io.Image.Input("images"), io.String.Input("filename_prefix", default="ComfyUI")],
                         outputs=[], is_output_node=True)

    @classmethod
    def execute(cls, images, filename_prefix):
        return io.NodeOutput(ui=ui.PreviewImage(images, cls=cls))


NODES = [LoadImage, LoadVideo, GetVideoComponents, CreateVideo, SaveVideo, ImageScaleBy, PreviewImage, SaveImage,
         LoadAudio]


def registry() -> dict:
    for cls in NODES:  # built-in nodes: "nodes" / "comfy_extras.*" in /object_info
        cls.RELATIVE_PYTHON_MODULE = "comfy_extras.nodes_video" if "Video" in cls.__name__ else "nodes"
    return {cls.GET_SCHEMA().node_id: cls for cls in NODES}
