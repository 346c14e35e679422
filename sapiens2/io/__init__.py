"""Input/output at the edges of the pipeline: robust image decoding, input expansion, atomic writes."""

from sapiens2.io.images import (
    IMAGE_EXTENSIONS,
    CorruptImageError,
    EmptyImageError,
    ImageDecodeError,
    ImageTooLargeError,
    NotAnImageError,
    TruncatedImageError,
    UnreadableImageError,
    UnsupportedImageFormatError,
    as_image,
    decode_image,
    is_image_path,
    read_image,
)
from sapiens2.io.inputs import (
    VIDEO_EXTENSIONS,
    ExpandedInputs,
    MissingInput,
    MissingInputsError,
    expand_inputs,
    is_video_path,
)
from sapiens2.io.writers import (
    atomic_open,
    remove_stale_temp_files,
    write_bytes,
    write_errors_json,
    write_image,
    write_json,
    write_npy,
    write_npz,
    write_text,
)
