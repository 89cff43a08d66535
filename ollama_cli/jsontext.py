"""JSON text out, for `--json` documents and cache keys, without importing the json package:
its import compiles seven regular expressions, 4.9 M instructions, 2 % of the start-up floor
of `submit` and `status`, which write JSON but never read it. This is the C encoder json
itself uses (CPython's `_json`), built once per form and checked against a known text; where
it is missing or writes something else, json does the work."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

_SAMPLE = ["m", 1, {"b": [1.5, None, True, float("inf")], "a": "\u00e9\n\"\\"}]


def _unserializable(obj: Any) -> Any:
    raise TypeError(f"Object of type {obj.__class__.__name__} is not JSON serializable")


def _encoder(separators: tuple[str, str], sort_keys: bool, expected: str) -> Callable[[Any], str]:
    try:
        from _json import encode_basestring, make_encoder

        # The arguments json.JSONEncoder.iterencode gives it: markers (None: no check for
        # reference cycles, none in parsed JSON or our own documents), default, the string
        # encoder (ensure_ascii=False), indent, separators, sort_keys, skipkeys, allow_nan.
        encode = make_encoder(None, _unserializable, encode_basestring, None, separators[1], separators[0],
                              sort_keys, False, True)

        def fast(obj: Any) -> str:
            return "".join(encode(obj, 0))

        if fast(_SAMPLE) == expected:
            return fast
    except Exception:  # noqa: S110 - no accelerator, or its private signature changed
        pass
    import json

    return json.JSONEncoder(sort_keys=sort_keys, separators=separators, ensure_ascii=False).encode


# json.dumps(obj, ensure_ascii=False): the contract's documents.
dumps = _encoder((", ", ": "), False, '["m", 1, {"b": [1.5, null, true, Infinity], "a": "\u00e9\\n\\"\\\\"}]')
# Sorted keys and no spaces: one text per value, for digests.
canonical = _encoder((",", ":"), True, '["m",1,{"a":"\u00e9\\n\\"\\\\","b":[1.5,null,true,Infinity]}]')
