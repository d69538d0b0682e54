#!/usr/bin/env python3
"""Regenerates taskdef/model/register-task-definition.json.

The crate cleans and validates task definitions against the request model of
ECS RegisterTaskDefinition as published in botocore (Apache-2.0). This script
keeps only the shapes reachable from RegisterTaskDefinitionRequest and only the
facts the crate uses (member names, types, list/map/structure/enum info,
required members, length/count limits), dropping the documentation.

Usage:
    pip download --no-deps -d /tmp/bc botocore
    python3 taskdef/tools/extract-register-model.py /tmp/bc/botocore-*.whl \
        > taskdef/model/register-task-definition.json

The argument may also be an unpacked botocore package directory (the one that
holds __init__.py and data/). Update taskdef/model/NOTICE with the version.
"""

import gzip
import json
import os
import re
import sys
import zipfile

SERVICE = "botocore/data/ecs/2014-11-13/service-2.json"
INPUT = "RegisterTaskDefinitionRequest"
VERSION_RE = re.compile(r"""__version__ = ['"]([^'"]+)['"]""")
SHAPE_KEYS = ("type", "required", "enum", "min", "max", "pattern", "union")


def read_from_wheel(path):
    with zipfile.ZipFile(path) as wheel:
        names = set(wheel.namelist())
        version = VERSION_RE.search(wheel.read("botocore/__init__.py").decode()).group(1)
        if SERVICE + ".gz" in names:
            raw = gzip.decompress(wheel.read(SERVICE + ".gz"))
        else:
            raw = wheel.read(SERVICE)
    return json.loads(raw), version


def read_from_dir(path):
    with open(os.path.join(path, "__init__.py"), encoding="utf-8") as f:
        version = VERSION_RE.search(f.read()).group(1)
    service = os.path.join(path, SERVICE.removeprefix("botocore/"))
    if os.path.exists(service + ".gz"):
        with gzip.open(service + ".gz") as f:
            return json.load(f), version
    with open(service, encoding="utf-8") as f:
        return json.load(f), version


def trim(shapes):
    out = {}
    todo = [INPUT]
    while todo:
        name = todo.pop()
        if name in out:
            continue
        shape = shapes[name]
        kept = {k: shape[k] for k in SHAPE_KEYS if k in shape}
        if "members" in shape:
            kept["members"] = {}
            for member, ref in shape["members"].items():
                kept_ref = {"shape": ref["shape"]}
                if ref.get("deprecated"):
                    kept_ref["deprecated"] = True
                kept["members"][member] = kept_ref
                todo.append(ref["shape"])
        for part in ("member", "key", "value"):
            if part in shape:
                kept[part] = {"shape": shape[part]["shape"]}
                todo.append(shape[part]["shape"])
        out[name] = kept
    return out


def main():
    if len(sys.argv) != 2:
        sys.exit(__doc__)
    source = sys.argv[1]
    if os.path.isdir(source):
        service, version = read_from_dir(source)
    else:
        service, version = read_from_wheel(source)
    model = {
        "origin": "botocore " + version + " (Apache-2.0), " + SERVICE
        + ", trimmed to the shapes reachable from " + INPUT
        + " by taskdef/tools/extract-register-model.py",
        "botocoreVersion": version,
        "apiVersion": service["metadata"]["apiVersion"],
        "operation": "RegisterTaskDefinition",
        "input": INPUT,
        "shapes": trim(service["shapes"]),
    }
    json.dump(model, sys.stdout, indent=1, sort_keys=True, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
