# The client packages (clients/python, clients/node), installed the way a user
# installs them, so that tests/client_packages.rs tests what `pip install` and
# `npm install` give rather than the source trees; pytest runs the Python
# suite, and TypeScript (with Node's types) compiles
# clients/node/test/types-check.mts against clients/node/index.d.ts.
ci_pip pytest "$ROOT/clients/python"
# install-links: clients/node is packed and copied, as from a registry (so its
# "files" list is tested), not linked to the source; in .npmrc, so that the
# npm installs of later .ci/needs files keep it a copy.
# A copy is not refreshed by npm while the version stays the same: the old
# one goes first, so that the copy is always the source as it is now.
mkdir -p "$CI_DIR/node"
echo 'install-links=true' >"$CI_DIR/node/.npmrc"
rm -rf "$CI_DIR/node/node_modules/junction-client"
ci_npm "$ROOT/clients/node" typescript @types/node
