#!/usr/bin/env python3
"""Print image.json for a built oci-archive: digests, sizes and how it was built.

Run by image/build.sh; reads only the archive (a tar of an OCI image layout) and the
uncompressed layer tar it was made from.
"""

from __future__ import annotations

import argparse
import json
import tarfile
from pathlib import Path
from typing import Any


def read(archive: tarfile.TarFile, name: str) -> bytes:
    member = archive.extractfile(name)
    assert member is not None, name
    return member.read()


def blob(archive: tarfile.TarFile, digest: str) -> bytes:
    algo, hexdigest = digest.split(":", 1)
    return read(archive, f"./blobs/{algo}/{hexdigest}")


def blob_size(archive: tarfile.TarFile, digest: str) -> int:
    algo, hexdigest = digest.split(":", 1)
    return archive.getmember(f"./blobs/{algo}/{hexdigest}").size


def describe(archive_path: Path, tag: str) -> dict[str, Any]:
    with tarfile.open(archive_path) as archive:
        index = json.loads(read(archive, "./index.json"))
        (desc,) = [
            m
            for m in index["manifests"]
            if m.get("annotations", {}).get("org.opencontainers.image.ref.name") == tag
        ]
        manifest = json.loads(blob(archive, desc["digest"]))
        config = json.loads(blob(archive, manifest["config"]["digest"]))
        layers = [
            {
                "digest": layer["digest"],
                "compressed_bytes": layer["size"],
                "media_type": layer["mediaType"],
            }
            for layer in manifest["layers"]
        ]
        for layer, diff_id in zip(layers, config["rootfs"]["diff_ids"], strict=True):
            layer["diff_id"] = diff_id
        compressed = (
            desc["size"]
            + manifest["config"]["size"]
            + sum(blob_size(archive, layer["digest"]) for layer in manifest["layers"])
        )
    return {
        "tag": tag,
        "manifest_digest": desc["digest"],
        "config_digest": manifest["config"]["digest"],
        "layers": layers,
        "compressed_bytes": compressed,
        "archive_bytes": archive_path.stat().st_size,
        "config": config["config"],
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--archive", type=Path, required=True)
    ap.add_argument("--rootfs-tar", type=Path, required=True)
    ap.add_argument("--tag", required=True)
    ap.add_argument("--inputs", required=True)
    ap.add_argument("--build-seconds", type=int, required=True)
    ap.add_argument("--stage-seconds", required=True, help="deps=N|cached,runtime=N,image=N")
    ap.add_argument("--revision", required=True)
    ap.add_argument("--source-date-epoch", type=int, required=True)
    args = ap.parse_args()
    info = describe(args.archive, args.tag)
    info.update(
        archive=args.archive.name,
        uncompressed_bytes=args.rootfs_tar.stat().st_size,
        revision=args.revision,
        source_date_epoch=args.source_date_epoch,
        inputs=args.inputs,
        build_seconds=args.build_seconds,
        stage_seconds={
            k: (v if v == "cached" else int(v))
            for k, v in (kv.split("=") for kv in args.stage_seconds.split(","))
        },
    )
    print(json.dumps(info, indent=2))


if __name__ == "__main__":
    main()
