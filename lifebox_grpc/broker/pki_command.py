"""`lifebox pki`: the device CA and the broker's server certificate for a deployment, made
once (existing files are kept: bring your own CA by putting ca.crt and ca.key there first),
and the mutual-TLS listener's start-up files, so the broker can start before broker-sync's
first pass: an ACL that admits no certificate yet and an empty revocation list.

Ownership, for the compose layout: the CA key is read by `serve` (it signs devices' requests)
and `broker-sync` (it signs revocation lists), so it is 0640 with ``--key-owner uid:gid``
(serve's uid, broker-sync's gid); the broker's own key is 0600 for ``--broker-owner``.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from lifebox_grpc.broker import files, tls
from lifebox_grpc.runtime.mosquitto import CERTIFICATE_ACL_FILE, CRL_FILE


def configure(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--dir", type=Path, required=True, help="where the CA and certificate go")
    parser.add_argument(
        "--hostname",
        action="append",
        required=True,
        help="a name or address devices reach the broker by (repeat for more)",
    )
    parser.add_argument(
        "--auth-dir", type=Path, help="the broker's auth folder: start-up certificate ACL and CRL"
    )
    parser.add_argument("--key-owner", help="uid:gid of the CA key (mode 0640)")
    parser.add_argument("--broker-owner", help="uid:gid of the broker's key and files")


def _ids(value: str | None) -> tuple[int, int] | None:
    if value is None:
        return None
    uid, _, gid = value.partition(":")
    return int(uid), int(gid or uid)


def run(args: argparse.Namespace) -> int:
    directory: Path = args.dir
    try:
        key_owner, broker_owner = _ids(args.key_owner), _ids(args.broker_owner)
    except ValueError:
        print("--key-owner and --broker-owner take uid:gid numbers", flush=True)
        return 2
    authority = tls.ensure_dev_pki(directory, args.hostname)
    if key_owner is not None:
        os.chown(directory / tls.CA_KEY, *key_owner)
        (directory / tls.CA_KEY).chmod(0o640)
    broker_files = [directory / tls.BROKER_CERT, directory / tls.BROKER_KEY]
    if args.auth_dir is not None:
        acl, crl = args.auth_dir / CERTIFICATE_ACL_FILE, args.auth_dir / CRL_FILE
        if not acl.exists():
            files.write_if_changed(acl, files.certificate_acl_file([]))
        if not crl.exists():
            files.write_if_changed(crl, authority.revocation_list([], 1))
        broker_files += [acl, crl]
    if broker_owner is not None:
        for path in broker_files:
            os.chown(path, *broker_owner)
    print(f"device CA: {directory / tls.CA_CERT} (devices check the broker against it)")
    return 0
