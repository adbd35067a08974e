"""Under pytest-xdist the backends of one (spec, version) share a worker (README "Board farms")."""

from pytest_rknn.xdist_groups import scope_of


def test_the_backends_of_one_spec_and_version_share_a_scope_and_nothing_else_does():
    assert scope_of("specs/cnn.rknn.yaml::cnn[2.5.0-sim]") == scope_of("specs/cnn.rknn.yaml::cnn[2.5.0-board]")
    assert scope_of("test_api.py::test_x[2.3.2-sim]") == scope_of("test_api.py::test_x[2.3.2-board]")
    scopes = {scope_of(n) for n in ("specs/cnn.rknn.yaml::cnn[2.5.0-sim]", "specs/cnn.rknn.yaml::cnn[2.3.2-sim]",
                                    "specs/b.rknn.yaml::b[2.5.0-sim]", "test_api.py::test_x[2.5.0-sim]",
                                    "test_plain.py::test_y", "test_plain.py::test_z[a-b]")}
    assert len(scopes) == 6
