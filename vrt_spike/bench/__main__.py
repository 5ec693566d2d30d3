"""`python -m vrt_spike.bench [override ...]`: the benchmark CLI (`conf/bench.yaml`; what it measures:
`vrt_spike.bench.run`)."""
from __future__ import annotations

import hydra

import vrt_spike.lit  # noqa: F401  (registers the resolvers conf/ uses)
from vrt_spike import PROJECT_ROOT
from vrt_spike.bench.run import bench_main


def main() -> None:
    hydra.main(version_base="1.3", config_path=str(PROJECT_ROOT / "conf"), config_name="bench")(bench_main)()


if __name__ == "__main__":
    main()
