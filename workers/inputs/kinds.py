"""Which keys are images: by their extension, without reading them (a listing, a tar's members)."""

IMAGE_EXTENSIONS = frozenset(
    {".jpg", ".jpeg", ".png", ".bmp", ".webp", ".tif", ".tiff", ".jp2", ".gif", ".avif", ".heic", ".heif"}
)
"""What a prefix or directory listing takes by default. HEIC/HEIF is listed although this OpenCV cannot
decode it: such a photo gets an error row saying so instead of vanishing from the output."""
