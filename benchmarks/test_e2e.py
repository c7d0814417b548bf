"""End-to-end benchmarks under pytest-benchmark:

    pytest benchmarks --benchmark-only -k e2e [--e2e-rounds 3] [--e2e-quick]

Each (scenario, server) case runs ``--e2e-rounds`` rounds; a round starts the
server (untimed setup), runs wsload on a fixed amount of work (``--messages``;
idle-10k is fixed work by itself), and stops the server (untimed teardown).
The timed part is the whole wsload run, connection setup included; the
throughput that matters is in ``extra_info`` (the median over rounds, and every
round's value). Servers whose library cannot be imported (or, for bun, whose
runtime cannot be found or installed) are skipped.
"""
import statistics

import pytest

import e2e

CASES = [pytest.param(sc, srv, id=f"{sc.name}-{srv}") for sc in e2e.SCENARIOS for srv in e2e.SERVERS]


@pytest.fixture(scope="session")
def wsload():
    return e2e.build_loadgen()


@pytest.mark.parametrize("scenario,server", CASES)
def test_e2e(benchmark, request, wsload, scenario, server):
    why = e2e.server_unavailable(server) or e2e.scenario_unsupported(scenario, server)
    if why:
        pytest.skip(f"{server}: {why}")
    quick = request.config.getoption("--e2e-quick")
    rounds = request.config.getoption("--e2e-rounds")
    cfg = e2e.RunConfig(quick=quick, fixed_work=True, warmup=0.2 if quick else 0.5)
    benchmark.group = scenario.name  # compare servers within a scenario
    started: list[e2e.ServerProcess] = []
    results: list[dict] = []

    def setup():
        srv = e2e.ServerProcess(server, scenario.server_args).start()
        started.append(srv)
        return (srv,), {}

    def one_round(srv):
        results.append(e2e.run_wsload(srv, scenario, cfg))

    try:
        benchmark.pedantic(one_round, setup=setup, teardown=lambda srv: srv.stop(), rounds=rounds, iterations=1)
    finally:
        for srv in started:  # teardown is skipped when a round raises
            srv.stop()

    info = benchmark.extra_info
    info.update(scenario=scenario.name, server=server, wsload_args=" ".join(scenario.wsload_args(quick)),
                messages=scenario.fixed_messages(quick))
    for metric in scenario.metrics:
        values = [r[metric.key] for r in results if r.get(metric.key) is not None]
        if values:
            info[metric.key] = statistics.median(values)
            info[f"{metric.key}_rounds"] = values
    for key in ("loadgen_cpu_pct", "server_cpu_pct", "other_cpu_pct", "steal_cpu_pct"):
        values = [r[key] for r in results if r.get(key) is not None]
        if values:
            info[key] = statistics.median(values)
