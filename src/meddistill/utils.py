"""Small shared helpers: devices, seeded generators, atomic file writes, hashing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from meddistill.errors import ConfigError, OptionError


def resolve_device(name: str = "auto") -> torch.device:
    """Map 'auto' | 'cpu' | 'cuda' | 'cuda:N' to a device; 'auto' picks CUDA when present."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cpu":
        return torch.device("cpu")
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(
                f"device '{name}' was asked for but CUDA is not available here; use --device cpu or auto"
            )
        return torch.device(name)
    raise ConfigError(f"unknown device '{name}'; use auto, cpu or cuda[:N]")


def make_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """An explicit seeded generator: the only source of randomness this package uses."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(seed))
    return gen


def derive_seed(seed: int, *keys: Any) -> int:
    """A stable 63-bit seed derived from a base seed and any labels (e.g. 'expert', 3)."""
    text = "/".join([str(int(seed)), *map(str, keys)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") & ((1 << 63) - 1)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path in the target folder; rename it over `path` only on success.

    A crash mid-write leaves the previous file (or none) in place, never a partial one.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; artifacts are meant to be shared
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def json_safe(obj: Any, default: Callable[[Any], Any] = str) -> Any:
    """`obj` as strict JSON data: NaN and infinities become null (bare NaN is not JSON, and
    readers such as sqlite or browsers choke on it), numpy/torch scalars plain numbers, and
    anything else `default(obj)`."""
    if obj is None or isinstance(obj, str | bool):
        return obj
    if isinstance(obj, numbers.Integral):
        return int(obj)
    if isinstance(obj, numbers.Real):
        value = float(obj)
        return value if math.isfinite(value) else None
    if isinstance(obj, dict):
        return {k: json_safe(v, default) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [json_safe(v, default) for v in obj]
    converted = default(obj)
    if type(converted) is type(obj):
        return converted
    return json_safe(converted, default)


def json_text(obj: Any, default: Callable[[Any], Any] = str, **options: Any) -> str:
    """json.dumps of `json_safe(obj)`; allow_nan=False guarantees no NaN ever leaves."""
    return json.dumps(json_safe(obj, default), allow_nan=False, **options)


def write_json_atomic(path: str | os.PathLike[str], obj: Any) -> None:
    """Write JSON atomically, pretty-printed for people; non-finite numbers are written null."""
    with atomic_path(path) as tmp:
        tmp.write_text(json_text(obj, indent=2, sort_keys=True) + "\n")


def read_utf8(path: Path, what: str, error: type[Exception]) -> str:
    """The text of a small file a user wrote (config, labels CSV); unreadable or non-UTF-8
    bytes are refused as `error`, naming the file, the byte and its line."""
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise error(
            f"cannot read {what} {path}: {exc.strerror or exc}; check its permissions"
        ) from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise error(
            f"{what} {path} is not UTF-8 text (byte 0x{raw[exc.start]:02x} on line {line}); "
            "save it as UTF-8"
        ) from None


def md5_file(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    """The md5 hex digest of a file, read in chunks."""
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def stable_hash(obj: Any, length: int = 12) -> str:
    """A short content hash of a JSON-serialisable object (config identities, cache keys)."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:length]


# Option checks --------------------------------------------------------------------------------
SEED_LIMIT = 1 << 63
_UNSET = object()


def is_integer(value: Any) -> bool:
    """An int (not a bool), or a float with an integral value."""
    if isinstance(value, bool):
        return False
    if isinstance(value, numbers.Integral):
        return True
    return isinstance(value, float) and value.is_integer()


def is_finite_number(value: Any) -> bool:
    """A real number (not a bool) that is neither NaN nor infinite."""
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool)
        and math.isfinite(float(value))
    )


class Options:
    """Range checks of one config section's fields, run when the config is built, so an
    impossible value is refused before any work starts and named as `section.field`."""

    def __init__(self, section: str, config: Any) -> None:
        self.section, self.config = section, config

    def fail(self, name: str, rule: str, value: Any = _UNSET, advice: str = "") -> None:
        """Refuse option `name` (its value, unless given): it must be `rule`."""
        value = getattr(self.config, name) if value is _UNSET else value
        tail = f"; {advice}" if advice else ""
        raise OptionError(self.section, name, f"must be {rule}, got {value!r}{tail}")

    def counts(self, *names: str, minimum: int = 1, zero: str = "", optional: bool = False) -> None:
        """Integers >= minimum; `zero` says what 0 means when it is allowed (minimum 0)."""
        note = f" ({zero})" if zero else ""
        for name in names:
            value = getattr(self.config, name)
            if optional and value is None:
                continue
            if not (is_integer(value) and value >= minimum):
                either = " or null" if optional else ""
                self.fail(name, f"an integer >= {minimum}{note}{either}", value)

    def positive(self, *names: str, optional: bool = False) -> None:
        """Finite numbers > 0 (learning rates, step sizes); None allowed when optional."""
        for name in names:
            value = getattr(self.config, name)
            if optional and value is None:
                continue
            if not (is_finite_number(value) and value > 0):
                self.fail(name, "a finite number > 0" + (" or null" if optional else ""), value)

    def at_least(self, *names: str, minimum: float = 0.0, zero: str = "") -> None:
        """Finite numbers >= minimum (weights, thresholds)."""
        note = f" ({zero})" if zero else ""
        for name in names:
            value = getattr(self.config, name)
            if not (is_finite_number(value) and value >= minimum):
                self.fail(name, f"a finite number >= {minimum:g}{note}", value)

    def fraction(self, *names: str, low_open: bool = False, high_open: bool = True) -> None:
        """Numbers in [0, 1) (momenta, decays), or the interval the flags say."""
        for name in names:
            self.fraction_value(name, getattr(self.config, name), low_open, high_open)

    def fraction_value(
        self, name: str, value: Any, low_open: bool = False, high_open: bool = True
    ) -> None:
        """`fraction` of a value given directly."""
        ok = is_finite_number(value) and (value > 0 if low_open else value >= 0)
        if not (ok and (value < 1 if high_open else value <= 1)):
            bounds = f"{'(' if low_open else '['}0, 1{')' if high_open else ']'}"
            self.fail(name, f"in {bounds}", value)

    def seeds(self, *names: str, optional: bool = False) -> None:
        """Seeds: integers in [0, 2**63), what every generator accepts."""
        for name in names:
            value = getattr(self.config, name)
            if optional and value is None:
                continue
            if not (is_integer(value) and 0 <= value < SEED_LIMIT):
                self.fail(name, "an integer in [0, 2**63)", value)

    def choice(self, name: str, valid: tuple[str, ...] | list[str]) -> None:
        """One of the `valid` names."""
        if getattr(self.config, name) not in valid:
            self.fail(name, f"one of {', '.join(map(str, valid))}")

    def strategy(self, name: str) -> None:
        """A DSA strategy string such as 'color_crop_cutout' ('none' or null: no augmentation)."""
        from meddistill.augment.dsa import parse_strategy

        value = getattr(self.config, name)
        if value is None:
            return
        if not isinstance(value, str):
            self.fail(name, "a DSA strategy such as color_crop_cutout, or none", value)
        try:
            parse_strategy(value)
        except ConfigError as exc:
            raise OptionError(self.section, name, f"is invalid: {exc}") from None
