"""Output formats: one module per format, chosen automatically from the model's outputs."""

from __future__ import annotations

from collections.abc import Sequence

from facesweep.workers.errors import UserError
from facesweep.workers.model.formats import anchors, boxes_labels, centerface, priorbox, scrfd, ssd, yunet
from facesweep.workers.model.formats.base import Format, OutputInfo

FORMATS: dict[str, Format] = {
    f.name: f
    for f in (
        priorbox.FORMAT,
        centerface.FORMAT,
        ssd.FORMAT,
        boxes_labels.FORMAT,
        anchors.RETINAFACE,
        anchors.SSH,
        scrfd.FORMAT,
        scrfd.FORMAT_NO_KPS,
        yunet.FORMAT,
    )
}


class UnknownFormatError(UserError, ValueError):
    """The model's outputs match no known format."""


def detect_format(
    outputs: Sequence[OutputInfo], model: str, forced: str | None = None
) -> tuple[Format, list[int]]:
    """The format whose rule matches `outputs` (or the `forced` one) and the output indices it decodes."""
    if forced is not None and forced not in FORMATS:
        raise UnknownFormatError(f"unknown --format {forced!r}: choose one of {', '.join(FORMATS)}")
    candidates = [FORMATS[forced]] if forced else list(FORMATS.values())
    for fmt in candidates:
        indices = fmt.match(outputs)
        if indices is not None:
            return fmt, indices
    seen = "; ".join(f"{'|'.join(sorted(o.names)) or '?'} {list(o.shape)}" for o in outputs)
    if forced:
        raise UnknownFormatError(
            f"model {model}: outputs [{seen}] are not of format {forced!r}: check --format"
        )
    raise UnknownFormatError(
        f"model {model}: outputs [{seen}] match no known format ({', '.join(FORMATS)}): "
        "use a face detector of one of these formats, or pass --format"
    )
