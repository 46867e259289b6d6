# tests/federation.rs: real nats-server processes (a 3-node cluster on loopback
# ports) that the federated junctiond instances talk to.
ci_apt nats-server nats-server
