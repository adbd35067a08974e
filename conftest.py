# pytester runs pytest-rknn end to end in a subprocess, as a user would.
pytest_plugins = ["pytester"]
