# HTTP, metrics and WebSocket (tests/http*.rs, tests/websocket*.rs):
# curl for requests, Python's prometheus_client text parser for /metrics,
# the Python websockets package and Node's ws package as WebSocket clients.
ci_apt curl curl
ci_apt node nodejs
ci_apt npm npm
ci_pip prometheus-client websockets
ci_npm ws
