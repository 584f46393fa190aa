"""`python -m repro.energy.meters`: the registered energy meters and whether this machine has each."""

from __future__ import annotations

from repro.energy.meters import availability
from repro.energy.registry import get_spec


def main() -> None:
    import torch

    # What a job with gpu=auto would train on here, so that a GPU meter says whether there is a GPU.
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    for name, reason in availability(device).items():
        methods = ", ".join(method.name for method in get_spec(name).methods)
        state = "available" if reason is None else f"unavailable: {reason}"
        print(f"{name:<12} {state}  (methods: {methods})")


if __name__ == "__main__":
    main()
