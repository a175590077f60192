"""Which folders may be a KB: absolute, a folder, and never the pyrite home, `/` or a system folder."""

from __future__ import annotations

from pathlib import Path
from typing import Iterable

from pyrite.errors import ConflictError, NotFoundError, ValidationError

# Folders that hold the operating system: neither they nor anything inside them is a KB.
SYSTEM_TREES = ("/bin", "/boot", "/dev", "/etc", "/lib", "/lib32", "/lib64", "/libx32", "/proc", "/run",
                "/sbin", "/sys", "/usr", "/var", "/System", "/Library", "/private/etc", "/private/var/db")
# Folders that hold everyone's files: a KB may live inside them, but not be one (it would index all of it).
CONTAINERS = ("/", "/home", "/root", "/tmp", "/opt", "/srv", "/mnt", "/media", "/Users", "/Volumes",
              "/private", "/private/tmp", "/private/var")


def _inside(path: Path, tree: Path) -> bool:
    return path == tree or tree in path.parents


def check_kb_folder(raw: str | Path, *, home: Path, others: Iterable[tuple[str, str]] = (),
                    create: bool = False) -> Path:
    """The resolved folder for a new KB at raw, or an error saying why it may not be one: ValidationError for
    folders that never may, NotFoundError for a missing one (unless create), ConflictError for another KB's.

    raw must be absolute; it must exist as a folder unless create is set (it is then made by the caller).
    others are (name, folder) of the KBs there are already: KB folders never nest.
    """
    text = str(raw)
    if not text.strip() or "\x00" in text:
        raise ValidationError("KB path must be a non-empty folder path")
    path = Path(text)
    if not path.is_absolute():
        raise ValidationError(f"KB path {text!r} must be absolute (for example {Path.home() / 'notes'})")
    try:
        folder = path.resolve()
    except (OSError, RuntimeError, ValueError) as exc:  # a symlink loop, an unreadable component
        raise ValidationError(f"KB path {text!r} is not a usable folder path ({exc})") from None
    for tree in SYSTEM_TREES:
        if _inside(folder, Path(tree)):
            raise ValidationError(f"{folder} is a system folder ({tree}); choose a folder of your own")
    if str(folder) in CONTAINERS or folder == Path.home().resolve():
        raise ValidationError(f"{folder} holds far more than notes; choose a folder inside it")
    home = home.resolve()
    if _inside(home, folder):
        raise ValidationError(f"{folder} holds the pyrite home ({home}); choose a folder outside it")
    if _inside(folder, home) and (home / "kbs") not in folder.parents:
        raise ValidationError(f"{folder} is inside the pyrite home ({home}); only {home / 'kbs'}/NAME may be")
    for name, other in others:
        other_path = Path(other)
        if folder == other_path:
            raise ConflictError(f"{folder} is already the folder of KB {name!r}")
        if _inside(folder, other_path) or _inside(other_path, folder):
            raise ConflictError(f"{folder} and the folder of KB {name!r} ({other}) would nest; KBs never overlap")
    if folder.exists() and not folder.is_dir():
        raise ValidationError(f"{folder} exists and is not a folder")
    if not folder.exists() and not create:
        raise NotFoundError(f"{folder} does not exist; create it first, or ask pyrite to create it "
                              "(CLI `--create`, REST `\"create\": true`)")
    return folder
