"""pynetwork.backend2's helpers that tutorials use: numbers and text to and from bytes, and a
print that threads do not interleave."""

import struct
import threading
from enum import Enum

__all__ = ["DataType", "to_bytes", "from_bytes", "int_to_bytes", "bytes_to_int", "str_to_bytes",
           "bytes_to_str", "safe_print"]

_print_lock = threading.Lock()


class DataType(Enum):
    char = "c"
    bool = "?"
    int = "i"
    int_unsigned = "I"
    long = "q"
    long_unsigned = "Q"
    float = "f"
    double = "d"
    string = "s"


def to_bytes(data_type: DataType, value) -> bytes:
    if data_type == DataType.string:
        return value.encode("utf-8")
    return struct.pack(data_type.value, value)


def from_bytes(data_type: DataType, data: bytes):
    if data_type == DataType.string:
        return data.decode("utf-8")
    return struct.unpack(data_type.value, data)[0]


def int_to_bytes(value: int) -> bytes:
    """A 64-bit signed integer, native byte order (pynetwork's ``DataType.long``)."""
    return to_bytes(DataType.long, value)


def bytes_to_int(data: bytes) -> int:
    return from_bytes(DataType.long, data[:8])


def str_to_bytes(text: str) -> bytes:
    return text.encode("utf-8")


def bytes_to_str(data: bytes) -> str:
    return data.decode("utf-8")


def safe_print(*args, **kwargs) -> None:
    with _print_lock:
        print(*args, **kwargs)
