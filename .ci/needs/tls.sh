# TLS and PROXY protocol (tests/tls.rs, tests/proxy_protocol.rs): independent TLS
# clients (openssl s_client; Python's ssl module is in the standard library) and a
# real HAProxy in front of junctiond with send-proxy-v2.
ci_apt openssl openssl
ci_apt python3 python3
ci_apt haproxy haproxy
