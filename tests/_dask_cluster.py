"""What the fastemb.dask test modules share: a LocalCluster per module and a compute that cannot hang.

Import it after ``pytest.importorskip("distributed")``: the suite runs without dask too. Sizes are small, so
starting the worker processes is most of a module's time; each module starts one cluster and closes it after
its last test (a cluster left running keeps its event loop allocating while later tests, e.g. test_leaks,
watch memory).
"""
import dask
import distributed
import pytest

TIMEOUT = 60  # seconds any computation or wait may take: a hang fails the test
WORKERS = 2


def cluster_fixtures():
    """Module-scoped ``cluster`` and ``client`` fixtures for a test module's top level
    (``cluster, client = cluster_fixtures()``): WORKERS worker processes with one thread each
    (FASTEMB_NUM_THREADS=1), and a client of it that is not the default one (other tests keep dask's local
    schedulers; the tests pass it explicitly)."""

    @pytest.fixture(scope="module", name="cluster")
    def cluster():
        c = distributed.LocalCluster(n_workers=WORKERS, threads_per_worker=1, processes=True,
                                     dashboard_address=":0", env={"FASTEMB_NUM_THREADS": "1"})
        yield c
        c.close()

    @pytest.fixture(scope="module", name="client")
    def client(cluster):
        with distributed.Client(cluster, set_as_default=False) as c:
            c.wait_for_workers(WORKERS, timeout=TIMEOUT)
            yield c

    return cluster, client


def compute(client, *arrays):
    """Computes on ``client`` (dask's local threaded scheduler when None); fails after TIMEOUT."""
    if client is None:
        return dask.compute(*arrays, scheduler="threads")
    futures = client.compute(list(arrays))
    return tuple(f.result(timeout=TIMEOUT) for f in futures)
