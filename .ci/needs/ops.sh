# tests/discover.rs: rpc.discover's document checked against the OpenRPC
# meta-schema (tests/data/openrpc/) with Python's jsonschema.
ci_pip jsonschema
