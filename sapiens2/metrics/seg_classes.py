"""The 29 body-part classes ("dome29") the segmentation metrics report on, and their palette.

Facts of the reference release; kept as literals so the metrics need no data files. The palette lets a colour
label PNG be read back as class ids.
"""

from __future__ import annotations

SEG29_CLASSES: tuple[str, ...] = (
    "Background",
    "Apparel",
    "Eyeglass",
    "Face_Neck",
    "Hair",
    "Left_Foot",
    "Left_Hand",
    "Left_Lower_Arm",
    "Left_Lower_Leg",
    "Left_Shoe",
    "Left_Sock",
    "Left_Upper_Arm",
    "Left_Upper_Leg",
    "Lower_Clothing",
    "Right_Foot",
    "Right_Hand",
    "Right_Lower_Arm",
    "Right_Lower_Leg",
    "Right_Shoe",
    "Right_Sock",
    "Right_Upper_Arm",
    "Right_Upper_Leg",
    "Torso",
    "Upper_Clothing",
    "Lower_Lip",
    "Upper_Lip",
    "Lower_Teeth",
    "Upper_Teeth",
    "Tongue",
)

SEG29_PALETTE_RGB: tuple[tuple[int, int, int], ...] = (
    (50, 50, 50),  # Background
    (255, 218, 0),  # Apparel
    (14, 204, 182),  # Eyeglass
    (128, 200, 255),  # Face_Neck
    (255, 0, 109),  # Hair
    (189, 0, 204),  # Left_Foot
    (255, 0, 218),  # Left_Hand
    (0, 160, 204),  # Left_Lower_Arm
    (0, 255, 145),  # Left_Lower_Leg
    (204, 0, 131),  # Left_Shoe
    (182, 0, 255),  # Left_Sock
    (255, 109, 0),  # Left_Upper_Arm
    (0, 255, 255),  # Left_Upper_Leg
    (72, 0, 255),  # Lower_Clothing
    (204, 131, 0),  # Right_Foot
    (255, 0, 0),  # Right_Hand
    (72, 255, 0),  # Right_Lower_Arm
    (189, 204, 0),  # Right_Lower_Leg
    (182, 255, 0),  # Right_Shoe
    (102, 0, 204),  # Right_Sock
    (32, 72, 204),  # Right_Upper_Arm
    (0, 145, 255),  # Right_Upper_Leg
    (14, 204, 0),  # Torso
    (0, 128, 72),  # Upper_Clothing
    (235, 205, 119),  # Lower_Lip
    (115, 227, 112),  # Upper_Lip
    (157, 113, 143),  # Lower_Teeth
    (132, 93, 50),  # Upper_Teeth
    (82, 21, 114),  # Tongue
)

IGNORE_INDEX = 255
