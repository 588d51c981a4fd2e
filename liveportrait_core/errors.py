"""User-facing errors: one clear message naming the input and what to do."""


def short_reason(e: BaseException) -> str:
    """The first sentence of `e`'s message (the cause, not a library's advice), at most 200
    characters; the exception's class name when it has no message. For wrapping a library's
    error into one of ours."""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
    msg = msg.split(". ")[0]
    return msg if len(msg) < 200 else msg[:197] + "..."


class LivePortraitError(ValueError):
    """Base class of every error a user can fix (bad file, missing weights, no face…).

    Hosts print an exception as "<module>.<class>: message"; inside ComfyUI's custom_nodes/ the
    module would be a long file path, so every subclass reports the short public name
    "liveportrait" (the message stays first and readable: "liveportrait.FaceNotFoundError: …").
    """

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.__module__ = "liveportrait"


LivePortraitError.__module__ = "liveportrait"


class WeightsError(LivePortraitError):
    """Weights missing, truncated, of the wrong network, or not downloadable."""


class FaceNotFoundError(LivePortraitError):
    """No face (or not the requested face) in an input image or video."""


class MotionFileError(LivePortraitError):
    """A motion template that cannot be read safely or has the wrong content."""


class VideoError(LivePortraitError):
    """A video or image sequence that cannot be read or written."""


class InputError(LivePortraitError):
    """Inputs that do not fit together (shapes, batch sizes, options)."""

