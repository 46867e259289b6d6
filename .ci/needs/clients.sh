# The client packages (clients/python, clients/node), installed the way a user
# installs them, so that tests/client_packages.rs tests what `pip install`
# gives rather than the source tree; pytest runs the Python suite.
ci_pip pytest "$ROOT/clients/python"
