# HTTP, metrics and WebSocket (tests/http*.rs, tests/websocket*.rs):
# curl for requests, Python's prometheus_client text parser for /metrics,
# the Python websockets package and Node's ws package as WebSocket clients.
ci_apt curl curl
ci_apt node nodejs
ci_apt npm npm
ci_pip prometheus-client websockets
ci_npm ws
# The browser test (tests/websocket_browser.rs): Debian's Chromium, driven
# by playwright-core (no browser download of its own: it uses /usr/bin/chromium).
ci_apt chromium chromium
ci_npm playwright-core
