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

#: Classes on which the gate refuses a significant loss (the others are tested and warned about), by group:
#: - speed limits (0-8): a misread limit sets the car's speed;
#: - no passing (9, 10): overtaking where it is forbidden;
#: - right-of-way, priority road, yield, stop, no entry (11-14, 17): who goes first at a junction;
#: - no vehicles (15): a road closed to traffic;
#: - general caution, dangerous curves (18-21): hazards that call for slowing down;
#: - vulnerable road users (27 pedestrians, 28 children crossing, 29 bicycles crossing): people on the road,
#:   cyclists exactly like pedestrians and children (added by issue #52);
#: - keep right/left (38, 39): which side of an obstacle to pass.
SAFETY_CRITICAL: frozenset[int] = frozenset(
    [*range(0, 9), 9, 10, 11, 12, 13, 14, 15, 17, 18, 19, 20, 21, 27, 28, 29, 38, 39]
)

#: GTSRB's tracks are 30 frames of one physical sign (every test class count is a multiple of 30).
GTSRB_TRACK_LENGTH = 30
