"""Where the embedded PostgreSQL and mosquitto keep their files when the dev home is out of
their reach.

Run as root, both servers drop to their own system users (PostgreSQL refuses root, mosquitto
drops to ``mosquitto``). A checkout under ``/root`` (mode 0700) or any other folder those
users cannot traverse then fails at once (``initdb: could not access directory``). We do not
loosen the user's folders (a chmod or an ACL on ``/root`` would open it to more than our two
servers, and outlive us); instead their folders (``pg``, ``pg-socket``, ``mqtt``, ``tls``)
move to ``/var/lib/lifebox/<id of the home>/`` (0711, like the home), and the home keeps a
symbolic link of each name, so every path the rest of the code knows still works. The
secrets and the admin's credentials stay in the home, now out of the servers' reach too.
"""

from __future__ import annotations

import grp
import hashlib
import os
import pwd
import stat
from pathlib import Path

# The embedded servers' folders and files that live beside each other (PostgreSQL writes
# pg.port and postgres.log beside its data folder).
SERVICE_ENTRIES = ("pg", "pg-socket", "pg.port", "postgres.log", "mqtt", "tls")
SERVICE_USERS = ("postgres", "mosquitto")


def service_data_root() -> Path:
    return Path(os.environ.get("LIFEBOX_SERVICE_DATA_ROOT", "/var/lib/lifebox"))


def _can_traverse(path: Path, user: pwd.struct_passwd) -> bool:
    groups = {user.pw_gid} | {g.gr_gid for g in grp.getgrall() if user.pw_name in g.gr_mem}
    for folder in [path, *path.parents]:
        mode = folder.stat()
        if mode.st_uid == user.pw_uid:
            bit = stat.S_IXUSR
        elif mode.st_gid in groups:
            bit = stat.S_IXGRP
        else:
            bit = stat.S_IXOTH
        if not mode.st_mode & bit:
            return False
    return True


def _service_users() -> list[pwd.struct_passwd]:
    found = []
    for name in SERVICE_USERS:
        try:
            found.append(pwd.getpwnam(name))
        except KeyError:
            continue
    return found


def home_out_of_reach(home: Path) -> bool:
    """Whether we run as root and a service user cannot reach ``home``."""
    if os.geteuid() != 0:
        return False  # the servers run as ourselves
    return any(not _can_traverse(home, user) for user in _service_users())


def place_service_dirs(home: Path) -> Path | None:
    """Move the servers' folders out of an unreachable home (links left in it); return
    where they now live, or None when the home is within their reach."""
    home = home.resolve()
    if not home_out_of_reach(home):
        return None
    ident = hashlib.sha256(os.fsencode(home)).hexdigest()[:16]
    target = service_data_root() / ident
    target.mkdir(parents=True, exist_ok=True)
    for folder in [target, *target.parents]:
        if folder == service_data_root().parent:
            break
        folder.chmod(0o711)
    (target / "home").write_text(f"{home}\n")  # which checkout these files belong to
    for name in SERVICE_ENTRIES:
        link = home / name
        if link.is_symlink():
            continue
        if link.is_dir() and not any(link.iterdir()):
            link.rmdir()  # left by a run that failed before initdb could write into it
        elif link.exists():
            continue  # made while the home was reachable: kept where it is
        link.symlink_to(target / name)
    return target
