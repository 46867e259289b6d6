# The client packages (clients/python, clients/node), installed the way a user
# installs them, so that tests/client_packages.rs tests what `pip install` and
# `npm install` give rather than the source trees (--install-links: a copy,
# not a link to clients/node); pytest runs the Python suite, and TypeScript
# (with Node's types) compiles clients/node/test/types-check.mts against
# clients/node/index.d.ts.
ci_pip pytest "$ROOT/clients/python"
ci_npm --install-links "$ROOT/clients/node" typescript @types/node
