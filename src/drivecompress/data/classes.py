"""The 43 GTSRB class names and the safety-critical set the gate protects (DESIGN.md)."""

from __future__ import annotations

NUM_CLASSES = 43

CLASS_NAMES: tuple[str, ...] = (
    "speed limit 20",
    "speed limit 30",
    "speed limit 50",
    "speed limit 60",
    "speed limit 70",
    "speed limit 80",
    "end of speed limit 80",
    "speed limit 100",
    "speed limit 120",
    "no passing",
    "no passing for trucks",
    "right-of-way at next intersection",
    "priority road",
    "yield",
    "stop",
    "no vehicles",
    "trucks prohibited",
    "no entry",
    "general caution",
    "dangerous curve left",
    "dangerous curve right",
    "double curve",
    "bumpy road",
    "slippery road",
    "road narrows on the right",
    "road work",
    "traffic signals",
    "pedestrians",
    "children crossing",
    "bicycles crossing",
    "beware of ice/snow",
    "wild animals crossing",
    "end of all restrictions",
    "turn right ahead",
    "turn left ahead",
    "ahead only",
    "go straight or right",
    "go straight or left",
    "keep right",
    "keep left",
    "roundabout mandatory",
    "end of no passing",
    "end of no passing for trucks",
)

#: Classes whose recall the safety gate protects: speed limits, no passing, right-of-way, priority, yield,
#: stop, no vehicles, no entry, general caution, dangerous curves, pedestrians, children, keep right/left.
SAFETY_CRITICAL: frozenset[int] = frozenset(
    [*range(0, 9), 9, 10, 11, 12, 13, 14, 15, 17, 18, 19, 20, 21, 27, 28, 38, 39]
)
