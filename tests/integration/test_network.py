"""The test network: host services reachable on the bridge, pod/service ranges kept local."""

from __future__ import annotations

import socket
import subprocess

import pytest

# Outside the pod subnet on the bridge (10.244.0.0/24) but inside the blackholed ranges.
UNASSIGNED = ["10.244.200.9", "10.96.200.9"]


def test_listener_on_host_ip_is_reachable_from_the_host(host_ip: str) -> None:
    with socket.socket() as server:
        server.bind((host_ip, 0))
        server.listen(1)
        with socket.create_connection(server.getsockname(), timeout=2) as client:
            accepted, peer = server.accept()
            with accepted:
                client.sendall(b"ping")
                assert accepted.recv(4) == b"ping"
                assert peer[0] == host_ip


@pytest.mark.parametrize("address", UNASSIGNED)
def test_unassigned_pod_and_service_addresses_fail_locally(host_ip: str, address: str) -> None:
    # Ask the routing table first: only dial once no route can take the packet out.
    lookup = subprocess.run(["ip", "route", "get", address], capture_output=True, text=True)
    assert lookup.returncode != 0, f"{address} is routable ({lookup.stdout.strip()}): blackhole route missing"
    with socket.socket() as sock, pytest.raises(OSError):
        sock.settimeout(2)
        sock.connect((address, 9))
