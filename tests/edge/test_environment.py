"""edge/environment.py: the environment fingerprint every manifest and report records."""

from edge.environment import environment_fingerprint


def test_environment_fingerprint_lists_cpu_flags():
    env = environment_fingerprint()
    assert isinstance(env["cpu_flags"], list)
    assert env["cpu_count"] >= 1
    assert len(env["machine_fingerprint"]) == 16
