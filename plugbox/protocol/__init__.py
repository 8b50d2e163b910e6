"""The wire between the host and its worker processes, shared by both sides and owned by neither.

`frames` (length-prefixed msgpack frames, size-capped readers and coalescing writers), `messages`
(one typed Struct per bridge operation, tagged unions per direction) and `spawn` (the zygote
control messages). This package imports nothing of plugbox but `plugbox.errors`: no host module,
no worker module (tests/unit/test_layering.py enforces it).
"""

from plugbox.protocol.frames import HEADER, FrameReader, FrameWriter, append_frame, encode_frame
from plugbox.protocol.messages import (
    PROTOCOL_VERSION,
    Call,
    ConfigChange,
    Health,
    Hello,
    Hook,
    HostMsg,
    HostRequest,
    LayerResult,
    Lifecycle,
    LifecycleMethod,
    Load,
    Log,
    Ping,
    Pong,
    Register,
    Reply,
    Result,
    Search,
    Shutdown,
    Webhook,
    WorkerMsg,
)
from plugbox.protocol.spawn import MAX_CONTROL_MSG, CgroupLimits, Exited, Failed, Spawn, Spawned, SpawnLimits, ZygoteMsg

__all__ = [
    "HEADER",
    "MAX_CONTROL_MSG",
    "PROTOCOL_VERSION",
    "Call",
    "CgroupLimits",
    "ConfigChange",
    "Exited",
    "Failed",
    "FrameReader",
    "FrameWriter",
    "Health",
    "Hello",
    "Hook",
    "HostMsg",
    "HostRequest",
    "LayerResult",
    "Lifecycle",
    "LifecycleMethod",
    "Load",
    "Log",
    "Ping",
    "Pong",
    "Register",
    "Reply",
    "Result",
    "Search",
    "Shutdown",
    "Spawn",
    "SpawnLimits",
    "Spawned",
    "Webhook",
    "WorkerMsg",
    "ZygoteMsg",
    "append_frame",
    "encode_frame",
]
