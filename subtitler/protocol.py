"""The wire protocol's names, shared by the server, its clients (``subtitler send``) and the
config: endpoint paths, room names, close codes. docs/protocol.md is its description.
Pure: imports nothing of ours.
"""

from __future__ import annotations

import re

PROTOCOL_VERSION = 1

# A room's name is part of its URLs (/rooms/NAME/…) and of its transcript folder.
ROOM_NAME = re.compile(r"^[a-z0-9][a-z0-9_-]{0,31}$")


def check_room_name(name: object) -> str:
    """``name`` if it can name a room, else ValueError saying what a room name may be."""
    if not isinstance(name, str) or not ROOM_NAME.fullmatch(name):
        raise ValueError(f"room name {str(name)[:40]!r} is not allowed: use 1 to 32 lower-case letters, "
                         f"digits, '-' or '_', starting with a letter or digit (e.g. 'hall', 'forum-2')")
    return name
