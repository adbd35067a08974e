"""Test board support: a real sshd on 127.0.0.1 (testboard.py), a test double of rknnlite
(double/), and the pytest plugin that registers built artifacts with it (registrar.py)."""
