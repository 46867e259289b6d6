"""Validates an OpenRPC document (argv[1]) against the vendored OpenRPC
meta-schema, offline. Exit 0: valid; 1: invalid (the errors on stderr).

The meta-schema refers to https://meta.json-schema.tools for JSON Schema
itself; the vendored copy of that schema is served for it, so nothing is
fetched. The released meta-schema's `openrpc` enum is filled with the spec's
release tags at build time (the source file holds a placeholder); here it
is the 1.3.x releases, which is what Junction claims."""

import json
import pathlib
import sys

import jsonschema
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

HERE = pathlib.Path(__file__).parent
openrpc = json.loads((HERE / "openrpc-meta-schema.json").read_text())
tools = json.loads((HERE / "json-schema-tools-meta-schema.json").read_text())
openrpc["properties"]["openrpc"] = {"type": "string", "pattern": r"^1\.3\.[0-9]+$"}

resource = Resource.from_contents(tools, default_specification=DRAFT7)
registry = Registry().with_resources(
    [("https://meta.json-schema.tools", resource), ("https://meta.json-schema.tools/", resource)]
)
validator = jsonschema.Draft7Validator(openrpc, registry=registry)
document = json.loads(pathlib.Path(sys.argv[1]).read_text())
errors = sorted(validator.iter_errors(document), key=lambda e: list(e.absolute_path))
# Every params and result schema must itself be a valid JSON Schema.
for method in document.get("methods", []):
    for descriptor in method.get("params", []) + [method.get("result", {"schema": {}})]:
        try:
            jsonschema.Draft202012Validator.check_schema(descriptor["schema"])
        except jsonschema.SchemaError as e:
            errors.append(f"{method.get('name')}: {e.message}")
for error in errors:
    where = "/".join(str(p) for p in getattr(error, "absolute_path", []))
    print(f"{where}: {getattr(error, 'message', error)}", file=sys.stderr)
sys.exit(1 if errors else 0)
