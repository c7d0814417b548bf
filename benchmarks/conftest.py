"""Options for the end-to-end benchmarks (benchmarks/test_e2e.py)."""


def pytest_addoption(parser):
    group = parser.getgroup("e2e", "end-to-end WebSocket benchmarks")
    group.addoption("--e2e-rounds", type=int, default=3,
                    help="rounds per (scenario, server); each starts a fresh server (default 3)")
    group.addoption("--e2e-quick", action="store_true",
                    help="less work and fewer connections per round (a smoke test)")
